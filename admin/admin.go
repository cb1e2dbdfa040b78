// Package admin serves the operator API on its own listener: the /buckets
// contract of DESIGN.md, /healthz, /readyz and /metrics.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gopher-equalizer/limits"
	"gopher-equalizer/metrics"

	"github.com/fasthttp/router"
	"github.com/goccy/go-json"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/pprofhandler"

	"gopher-equalizer/limiter"
	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
)

// Config is the admin part of the configuration.
type Config struct {
	Token        string  // bearer token; empty means no authentication
	DefaultLimit int     // page size of GET /buckets without limit
	RatePerSec   float64 // rate of a POSTed bucket without rate_per_sec
	StoreTimeout time.Duration
	// Hosts are the host names (host or host:port) served besides IP
	// literals and localhost: a guard against DNS rebinding.
	Hosts []string
	// Pprof serves /debug/pprof (behind the token like the rest).
	Pprof bool
	// NewBackend builds a backend from "URL weight=N" with the proxy's
	// client settings, for POST /backends.
	NewBackend func(spec string) (*pool.Backend, error)
	// SaveBackend stores a backend change of the named pool for every
	// instance (PostgreSQL); nil keeps changes in this process.
	SaveBackend func(ctx context.Context, poolName string, c pool.Change) error
	// Pools lists every pool by name, "default" included (nil: the pool
	// given to New is the only one, "default").
	Pools func() []metrics.NamedPool
	// Limits lists every limit, "default" first (nil: GET /limits is empty).
	Limits func() []*limits.Limit
}

// API is the admin handler.
type API struct {
	cfg     Config
	lim     *limiter.Limiter
	pool    *pool.Pool
	metrics *metrics.Registry
	log     zerolog.Logger
	now     func() time.Time

	draining atomic.Bool
}

// SetDraining makes /readyz answer 503 from now on, so that load balancers
// stop sending traffic while the proxy drains on shutdown.
func (a *API) SetDraining() { a.draining.Store(true) }

// New wires the admin API; /metrics reads reg.
func New(cfg Config, lim *limiter.Limiter, p *pool.Pool, reg *metrics.Registry, log zerolog.Logger) *API {
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = 5 * time.Second
	}
	return &API{cfg: cfg, lim: lim, pool: p, metrics: reg, log: log, now: time.Now}
}

// Handler returns the routed handler.
func (a *API) Handler() fasthttp.RequestHandler {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	// /healthz answers probes from anywhere, without the token.
	r.GET("/healthz", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok\n") })
	read := func(h fasthttp.RequestHandler) fasthttp.RequestHandler { return a.guard(a.auth(h)) }
	write := func(h fasthttp.RequestHandler) fasthttp.RequestHandler { return a.guard(a.auth(jsonBody(h))) }
	r.GET("/", a.guard(a.page))
	r.GET("/status", read(a.status))
	r.GET("/readyz", read(a.readyz))
	r.GET("/metrics", read(a.metricsPage))
	if a.cfg.Pprof {
		// Profiles for operators chasing CPU or memory (EQUALIZER_PPROF).
		r.GET("/debug/pprof/{profile:*}", read(pprofhandler.PprofHandler))
	}
	// /backends is the pool "default"; /pools/{pool}/backends any pool.
	r.GET("/pools", read(a.listPools))
	r.GET("/limits", read(a.listLimits))
	for _, prefix := range []string{"/backends", "/pools/{pool}/backends"} {
		r.GET(prefix, read(a.listBackends))
		r.POST(prefix, write(a.addBackend))
		r.GET(prefix+"/{id}", read(a.getBackend))
		r.PATCH(prefix+"/{id}", write(a.patchBackend))
		r.DELETE(prefix+"/{id}", read(a.deleteBackend))
	}
	// /buckets is the limit "default"; /limits/{limit}/buckets any limit.
	for _, prefix := range []string{"/buckets", "/limits/{limit}/buckets"} {
		r.POST(prefix, write(a.create))
		r.GET(prefix, read(a.list))
		r.GET(prefix+"/{id:*}", read(a.get))
		r.PUT(prefix+"/{id:*}", write(a.put))
		r.PATCH(prefix+"/{id:*}", write(a.patch))
		r.DELETE(prefix+"/{id:*}", read(a.delete))
	}
	r.NotFound = func(ctx *fasthttp.RequestCtx) { writeError(ctx, fasthttp.StatusNotFound, "no such route") }
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
	}
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		a.log.Error().Interface("panic", v).Bytes("path", ctx.Path()).Msg("admin handler panicked")
		writeError(ctx, fasthttp.StatusInternalServerError, "internal error")
	}
	return r.Handler
}

func (a *API) auth(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	if a.cfg.Token == "" {
		return next
	}
	want := []byte(a.cfg.Token)
	return func(ctx *fasthttp.RequestCtx) {
		if !bearerOK(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), want) {
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="gopher-equalizer"`)
			writeError(ctx, fasthttp.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next(ctx)
	}
}

func (a *API) readyz(ctx *fasthttp.RequestCtx) {
	if a.draining.Load() {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "shutting down")
		return
	}
	if len(a.pool.Healthy()) == 0 {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "no healthy backend")
		return
	}
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := a.lim.Ping(c); err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "store unavailable: "+err.Error())
		return
	}
	ctx.SetBodyString("ready\n")
}

func (a *API) metricsPage(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType(metrics.ContentType)
	if err := a.metrics.WritePrometheus(ctx); err != nil {
		ctx.Response.ResetBody()
		writeError(ctx, fasthttp.StatusInternalServerError, "metrics: "+err.Error())
	}
}

// bucketJSON is a bucket as the API shows it.
type bucketJSON struct {
	ClientID   string  `json:"client_id"`
	Capacity   int64   `json:"capacity"`
	Tokens     int64   `json:"tokens"`
	RatePerSec float64 `json:"rate_per_sec"`
	LastRefill string  `json:"last_refill"`
}

func toJSON(b limiter.Bucket) bucketJSON {
	return bucketJSON{
		ClientID:   b.ClientID,
		Capacity:   b.Capacity,
		Tokens:     b.WholeTokens(),
		RatePerSec: b.RatePerSec,
		LastRefill: b.LastRefill.Format(time.RFC3339Nano),
	}
}

func (a *API) create(ctx *fasthttp.RequestCtx) {
	lim, base := a.limiterFor(ctx)
	if lim == nil {
		return
	}
	body, err := decodeBody(ctx.PostBody())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	rate := a.cfg.RatePerSec // POST /buckets: the configured default
	if lim != a.lim {
		rate = lim.Defaults().RatePerSec
	}
	row, err := a.newBucket(body, rate)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if err := a.storeCall(func(c context.Context) error { return lim.Create(c, row) }); err != nil {
		a.writeStoreError(ctx, err)
		return
	}
	ctx.Response.Header.Set(fasthttp.HeaderLocation, base+"/"+url.PathEscape(row.ClientID))
	writeJSON(ctx, fasthttp.StatusCreated, toJSON(row))
}

func (a *API) newBucket(body bucketBody, defaultRate float64) (limiter.Bucket, error) {
	row := limiter.Bucket{RatePerSec: defaultRate, LastRefill: a.now().UTC()}
	var err error
	if !present(body.ClientID) {
		return row, errors.New("client_id is required")
	}
	if row.ClientID, err = parseClientID(body.ClientID); err != nil {
		return row, err
	}
	if !present(body.Capacity) {
		return row, errors.New("capacity is required")
	}
	if row.Capacity, err = parseInt("capacity", body.Capacity, 1, maxCapacity); err != nil {
		return row, err
	}
	row.Tokens = float64(row.Capacity)
	if present(body.Tokens) {
		tokens, err := parseInt("tokens", body.Tokens, 0, row.Capacity)
		if err != nil {
			return row, err
		}
		row.Tokens = float64(tokens)
	}
	if present(body.RatePerSec) {
		if row.RatePerSec, err = parseRate(body.RatePerSec); err != nil {
			return row, err
		}
	}
	return row, checkRefillTime(row.Capacity, row.RatePerSec)
}

// checkRefillTime keeps capacity/rate (a full refill) within what the
// nanosecond arithmetic of the limiter holds.
func checkRefillTime(capacity int64, rate float64) error {
	if float64(capacity)/rate > 1e9 {
		return errors.New("capacity/rate_per_sec is too large: a full refill must take at most 1e9 seconds")
	}
	return nil
}

func (a *API) list(ctx *fasthttp.RequestCtx) {
	lim, _ := a.limiterFor(ctx)
	if lim == nil {
		return
	}
	args := ctx.QueryArgs()
	limit, offset := a.cfg.DefaultLimit, 0
	var err error
	if args.Has("limit") {
		if limit, err = queryInt(args.Peek("limit"), 1, 1000); err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, "limit "+err.Error())
			return
		}
	}
	if args.Has("offset") {
		if offset, err = queryInt(args.Peek("offset"), 0, 1<<31-1); err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, "offset "+err.Error())
			return
		}
	}
	rows := lim.List(offset, limit, a.now().UnixNano())
	out := make([]bucketJSON, len(rows))
	for i, r := range rows {
		out[i] = toJSON(r)
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func queryInt(v []byte, lo, hi int) (int, error) {
	n, err := strconv.Atoi(string(v))
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("must be a whole number between %d and %d", lo, hi)
	}
	return n, nil
}

// pathID is the URL-decoded {id} segment. It is decoded from the raw path so
// that an escaped slash (%2F) stays part of the ID.
func pathID(ctx *fasthttp.RequestCtx, base string) (string, error) {
	raw := string(ctx.URI().PathOriginal())
	raw = strings.TrimPrefix(raw, base+"/")
	id, err := url.PathUnescape(raw)
	if err != nil {
		return "", errors.New("client id in the path is not valid percent-encoding")
	}
	if err := checkClientID(id); err != nil {
		return "", err
	}
	return id, nil
}

func (a *API) get(ctx *fasthttp.RequestCtx) {
	lim, base := a.limiterFor(ctx)
	if lim == nil {
		return
	}
	id, err := pathID(ctx, base)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	var row limiter.Bucket
	var ok bool
	err = a.storeCall(func(c context.Context) error {
		var ferr error
		row, ok, ferr = lim.Fetch(c, id, a.now().UnixNano())
		return ferr
	})
	if err != nil {
		a.writeStoreError(ctx, err)
		return
	}
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "bucket not found")
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, toJSON(row))
}

func (a *API) put(ctx *fasthttp.RequestCtx) {
	lim, base := a.limiterFor(ctx)
	if lim == nil {
		return
	}
	id, body, ok := a.pathAndBody(ctx, base)
	if !ok {
		return
	}
	if present(body.Tokens) {
		writeError(ctx, fasthttp.StatusBadRequest, "tokens cannot be set with PUT: use PATCH")
		return
	}
	if !present(body.Capacity) {
		writeError(ctx, fasthttp.StatusBadRequest, "capacity is required")
		return
	}
	capacity, err := parseInt("capacity", body.Capacity, 1, maxCapacity)
	var rate float64
	if err == nil && present(body.RatePerSec) {
		rate, err = parseRate(body.RatePerSec)
	}
	if err == nil {
		effective := rate
		if current, ok := lim.Get(id, a.now().UnixNano()); ok && rate == 0 {
			effective = current.RatePerSec
		}
		if effective > 0 {
			err = checkRefillTime(capacity, effective)
		}
	}
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	err = a.storeCall(func(c context.Context) error {
		return lim.SetCapacity(c, id, capacity, rate, a.now().UnixNano())
	})
	if err != nil {
		a.writeStoreError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (a *API) patch(ctx *fasthttp.RequestCtx) {
	lim, base := a.limiterFor(ctx)
	if lim == nil {
		return
	}
	id, body, ok := a.pathAndBody(ctx, base)
	if !ok {
		return
	}
	if present(body.Capacity) || present(body.RatePerSec) {
		writeError(ctx, fasthttp.StatusBadRequest, "only tokens can be set with PATCH: use PUT for capacity and rate_per_sec")
		return
	}
	if !present(body.Tokens) {
		writeError(ctx, fasthttp.StatusBadRequest, "tokens is required")
		return
	}
	tokens, err := parseInt("tokens", body.Tokens, 0, maxCapacity)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	err = a.storeCall(func(c context.Context) error { return lim.SetTokens(c, id, tokens, a.now().UnixNano()) })
	if err != nil {
		a.writeStoreError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (a *API) delete(ctx *fasthttp.RequestCtx) {
	lim, base := a.limiterFor(ctx)
	if lim == nil {
		return
	}
	id, err := pathID(ctx, base)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if err := a.storeCall(func(c context.Context) error { return lim.Delete(c, id) }); err != nil {
		a.writeStoreError(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// pathAndBody reads {id} and the body of a PUT or PATCH, answering 400 itself.
func (a *API) pathAndBody(ctx *fasthttp.RequestCtx, base string) (string, bucketBody, bool) {
	id, err := pathID(ctx, base)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return "", bucketBody{}, false
	}
	body, err := decodeBody(ctx.PostBody())
	if err == nil {
		err = checkPathMatch(body.ClientID, id)
	}
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return "", bucketBody{}, false
	}
	return id, body, true
}

func (a *API) storeCall(f func(context.Context) error) error {
	c, cancel := context.WithTimeout(context.Background(), a.cfg.StoreTimeout)
	defer cancel()
	return f(c)
}

func (a *API) writeStoreError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, limiter.ErrExists):
		writeError(ctx, fasthttp.StatusConflict, "client_id already exists")
	case errors.Is(err, limiter.ErrNotFound):
		writeError(ctx, fasthttp.StatusNotFound, "bucket not found")
	case errors.Is(err, limiter.ErrTokensAboveCapacity):
		writeError(ctx, fasthttp.StatusBadRequest, "tokens must be between 0 and the bucket's capacity")
	default:
		a.log.Error().Err(err).Msg("admin write failed: store unavailable")
		writeError(ctx, fasthttp.StatusServiceUnavailable, "store unavailable: "+err.Error())
	}
}

// ServerErrorHandler answers requests fasthttp could not parse with a JSON
// error, for the admin listener.
func ServerErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	status, msg := proxy.ParseErrorStatus(err)
	writeError(ctx, status, msg)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "cannot encode response")
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(data, '\n'))
}

func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	data, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(data, '\n'))
}
