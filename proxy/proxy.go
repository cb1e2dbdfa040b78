// Package proxy is the request path: derive the client key, charge its
// bucket, pick a healthy backend, forward over the backend's pooled
// HostClient, and map failures to 429, 502, 503 and 504.
//
// The handler reuses fasthttp's RequestCtx for the upstream request and
// response: in steady state it allocates nothing and takes no lock.
package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"gopher-equalizer/limiter"
	"gopher-equalizer/limits"
	"gopher-equalizer/logthrottle"
	"gopher-equalizer/pool"
	"gopher-equalizer/route"
	"gopher-equalizer/upstream"
)

// Config is the proxy's part of the configuration.
type Config struct {
	// BackendTimeout bounds the time until the backend's response head;
	// past it the client gets 504.
	BackendTimeout time.Duration
	// StreamIdleTimeout bounds each pause while a body streams, on either
	// side (EQUALIZER_STREAM_IDLE_TIMEOUT).
	StreamIdleTimeout time.Duration
	// TunnelIdleTimeout closes an Upgrade tunnel silent both ways this long.
	TunnelIdleTimeout time.Duration
	// MaxBodySize limits request bodies (413); 0 means unlimited.
	MaxBodySize int64
	// RequestIDHeader names the request ID header (EQUALIZER_REQUEST_ID);
	// empty turns request IDs off.
	RequestIDHeader string
	// AccessLog receives one JSON line per request; nil: no access log.
	// Its Write must not block.
	AccessLog io.Writer
	// RateLimitHeaders adds RateLimit-Limit, RateLimit-Remaining and
	// RateLimit-Reset to forwarded responses too, not only to 429s.
	RateLimitHeaders bool
}

// Proxy is the fasthttp handler. It is safe for concurrent use.
type Proxy struct {
	cfg     Config
	routes  atomic.Pointer[route.Table]
	deny    atomic.Pointer[[]netip.Prefix]
	limiter *limiter.Limiter // nil: no rate limiting
	key     ClientKey
	// defaultLimit is the limit "default": limiter and key above.
	defaultLimit *limits.Limit
	exempt       atomic.Pointer[[]netip.Prefix]
	Stats        Stats
	// RouteCounts are the requests of each route by outcome.
	RouteCounts route.Counters

	ids     *requestIDs         // nil: request IDs off
	access  *accessLogger       // nil: no access log
	errLog  *logthrottle.Logger // also holds the logger itself
	tunnels tunnels
}

// New returns a proxy that sends every request to p until SetRoutes gives
// it a table. lim may be nil to forward without limiting.
func New(cfg Config, p *pool.Pool, lim *limiter.Limiter, key ClientKey, log zerolog.Logger) *Proxy {
	px := &Proxy{cfg: cfg, limiter: lim, key: key, ids: newRequestIDs(cfg.RequestIDHeader),
		access: newAccessLogger(cfg.AccessLog),
		errLog: logthrottle.New(log, 10*time.Second)}
	if lim != nil {
		def := lim.Defaults()
		px.defaultLimit = &limits.Limit{Name: "default", Lim: lim, KeyText: key.String(), Capacity: def.Capacity, Rate: def.RatePerSec}
	}
	px.SetRoutes(route.CatchAll(p, px.defaultLimit))
	px.SetDeny(nil)
	px.SetExempt(nil)
	return px
}

// SetRoutes publishes a new route table; requests already routed finish
// on their pool.
func (p *Proxy) SetRoutes(t *route.Table) {
	for i := range t.Routes() {
		r := &t.Routes()[i]
		if r.Counts == nil {
			r.Counts = p.RouteCounts.For(r.Name)
		}
	}
	p.routes.Store(t)
}

// Routes is the table in use.
func (p *Proxy) Routes() *route.Table { return p.routes.Load() }

// SetDeny replaces the addresses answered 403 before anything else.
func (p *Proxy) SetDeny(cidrs []netip.Prefix) { p.deny.Store(&cidrs) }

// SetExempt replaces the addresses no limit charges.
func (p *Proxy) SetExempt(cidrs []netip.Prefix) { p.exempt.Store(&cidrs) }

// DefaultLimit is the limit "default" (nil with limiting off).
func (p *Proxy) DefaultLimit() *limits.Limit { return p.defaultLimit }

// ServeHTTP handles one request.
func (p *Proxy) ServeHTTP(ctx *fasthttp.RequestCtx) {
	var x exchange
	p.serve(ctx, &x)
	if x.nheld > 0 {
		p.settleHeld(ctx, &x)
	}
	if p.ids != nil {
		p.ids.reply(ctx, &x)
	}
	p.Stats.count(x.outcome)
	if x.route != nil {
		x.route.Counts[x.outcome].Add(1)
	}
	if p.access != nil {
		p.logAccess(ctx, &x)
	}
	requestDone(ctx, x.bodyIn)
}

// client is what admit learned about the request's sender, for the
// forwarding that follows.
type client struct {
	f       fields
	peer    netip.Addr
	trusted bool
}

// admit takes a request through the steps every request takes, whatever
// its protocol: header checks, deny, route, client key, limits and the
// pick of a backend. It answers and returns nil when the request goes no
// further. HTTP/1.1 comes from fasthttp directly, HTTP/2 through the
// adapter in h2.go.
func (p *Proxy) admit(ctx *fasthttp.RequestCtx, x *exchange, c *client) *pool.Backend {
	req := &ctx.Request
	var idName []byte
	if p.ids != nil {
		idName = p.ids.name
	}
	c.f = readFields(&req.Header, p.key.header, idName)
	f := &c.f
	if p.ids != nil {
		p.ids.assign(f, x)
	}
	if f.badName != nil {
		x.answer(ctx, BadRequest, "invalid header name\n", fasthttp.StatusBadRequest)
		return nil
	}
	peer := peerAddr(ctx)
	trusted := p.key.isTrusted(peer)
	c.peer, c.trusted = peer, trusted
	if deny := *p.deny.Load(); len(deny) > 0 && denied(deny, p.key.clientAddr(f, peer, trusted)) {
		x.answer(ctx, Denied, "forbidden\n", fasthttp.StatusForbidden)
		return nil
	}
	rt := p.routes.Load().Match(req)
	if rt == nil {
		x.answer(ctx, NoRoute, "no route\n", fasthttp.StatusNotFound)
		return nil
	}
	x.route = rt
	backends := rt.Pool

	keyedPick := backends.NeedsKey()
	lims := rt.Limits
	if p.limiter == nil || (len(lims) > 0 && p.isExempt(f, peer, trusted)) {
		lims = nil
	}
	x.charged = len(lims) > 0
	if keyedPick || (len(lims) > 0 && rt.DefaultKey) {
		key, err := p.key.appendKey(x.keyBuf[:0], f, peer, trusted)
		if err != nil {
			x.answer(ctx, BadRequest, err.Error()+"\n", fasthttp.StatusBadRequest)
			return nil
		}
		x.keyLen = len(key)
	}
	if len(lims) > 0 {
		var ipBuf [64]byte
		var ipKey []byte
		if len(lims) > 1 || !rt.DefaultKey {
			ipKey = p.key.appendIP(ipBuf[:0], f, peer, trusted)
		}
		if !p.charge(ctx, x, rt, ipKey) {
			return nil
		}
	}

	if keyedPick {
		x.keyHash = pool.KeyHash(x.key())
	}
	b := backends.Next(x.keyHash)
	if b == nil {
		x.answer(ctx, Unavailable, "no healthy backend\n", fasthttp.StatusServiceUnavailable)
		return nil
	}
	return b
}

// toUpstream rewrites the request's head for the backend: the route's
// strip_prefix, hop-by-hop fields, Forwarded/X-Forwarded-*, request ID.
func (p *Proxy) toUpstream(ctx *fasthttp.RequestCtx, x *exchange, c *client) {
	req := &ctx.Request
	if x.route.StripPrefix { // parsing the URI costs; only these need it
		setPath(req, x.route.UpstreamPath(req.URI().Path()))
	}
	stripRequest(&req.Header)
	setForwarded(ctx, &c.f, c.peer, c.trusted)
	if p.ids != nil {
		p.ids.upstream(&req.Header, x)
	}
}

func (p *Proxy) serve(ctx *fasthttp.RequestCtx, x *exchange) {
	var c client
	b := p.admit(ctx, x, &c)
	if b == nil {
		return
	}
	if b.H2 {
		p.forwardH1overH2(ctx, x, &c, b)
		return
	}
	req := &ctx.Request
	if !p.streamRequest(ctx, x) {
		return
	}
	// The protocol an Upgrade asks for, copied: stripping reshuffles the header.
	var upgradeBuf [64]byte
	upgrade := append(upgradeBuf[:0], upgradeAsked(&c.f)...)
	toOriginForm(req)
	p.toUpstream(ctx, x, &c)
	if len(upgrade) > 0 {
		req.Header.Set(fasthttp.HeaderConnection, "Upgrade")
		req.Header.SetBytesV(fasthttp.HeaderUpgrade, upgrade)
	}
	// Keep the client's Host header instead of the one parsed from the URI;
	// an HTTP/1.0 request without one gets the backend's.
	req.UseHostHeader = true
	if len(req.Header.Host()) == 0 {
		req.Header.SetHost(b.Addr)
	}
	// Upstream requests are HTTP/1.1 on the keep-alive pool whatever the
	// client spoke; the server answers the client in its own version.
	http10 := !req.Header.IsHTTP11()
	if http10 {
		req.Header.SetProtocolBytes(http11)
	}

	b, waited, err := p.forward(ctx, x, b)
	x.backend, x.upstream = b, waited
	if http10 {
		req.Header.SetProtocolBytes(http10Proto)
	}
	if err != nil {
		p.fail(ctx, x, err)
		return
	}
	if up, ok := ctx.Response.BodyStream().(*upstream.Upgraded); ok {
		if len(upgrade) == 0 || !p.startTunnel(ctx, x, up, upgrade) {
			b.Stats.Rejected()
			p.fail(ctx, x, errWrongUpgrade)
			return
		}
		x.outcome = Forwarded
		return
	}
	stripResponse(&ctx.Response.Header)
	p.streamResponse(ctx, http10)
	x.outcome = Forwarded
	if p.cfg.RateLimitHeaders && x.charged {
		setLimitFields(&ctx.Response.Header, x, x.route)
	}
}

var errWrongUpgrade = errors.New("backend switched to another protocol than the one asked for")

var (
	http11      = []byte("HTTP/1.1")
	http10Proto = []byte("HTTP/1.0")
)

// refuse answers a request the limiter turned down.
func (p *Proxy) refuse(ctx *fasthttp.RequestCtx, x *exchange, d *limiter.Decision) {
	if d.TableFull {
		x.answer(ctx, TableFull, "rate limiter table full\n", fasthttp.StatusServiceUnavailable)
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		return
	}
	x.answer(ctx, Limited, "rate limit exceeded\n", fasthttp.StatusTooManyRequests)
	h := &ctx.Response.Header
	var buf [20]byte
	h.SetBytesV(fasthttp.HeaderRetryAfter, strconv.AppendInt(buf[:0], ceilSeconds(d.Retry, 1), 10))
	setRateLimitHeaders(h, d)
}

// setRateLimitHeaders writes the RateLimit-* fields. RateLimit-Reset is the
// number of seconds until the bucket is full again.
func setRateLimitHeaders(h *fasthttp.ResponseHeader, d *limiter.Decision) {
	var buf [20]byte
	h.SetBytesV("RateLimit-Limit", strconv.AppendInt(buf[:0], d.Limit, 10))
	h.SetBytesV("RateLimit-Remaining", strconv.AppendInt(buf[:0], d.Remaining, 10))
	h.SetBytesV("RateLimit-Reset", strconv.AppendInt(buf[:0], ceilSeconds(d.Reset, 0), 10))
}

func ceilSeconds(d time.Duration, least int64) int64 {
	return max(int64((d+time.Second-1)/time.Second), least)
}

// connectFailed reports whether err means that no connection to the
// backend could be opened, so the request was not sent.
func connectFailed(err error) bool {
	var dial *fasthttp.ErrDialWithUpstream
	return errors.As(err, &dial) || errors.Is(err, fasthttp.ErrDialTimeout)
}

// connectFailed feeds passive health and logs when it takes b out.
func (p *Proxy) connectFailed(backends *pool.Pool, b *pool.Backend, err error) {
	if backends.ConnectFailed(b) {
		p.errLog.Log.Warn().Err(err).Str("backend", b.URL).Msg("backend taken out of rotation after connection failures; the health checker brings it back")
	}
}

// fail maps a forwarding error, over the HostClient or over net/http
// (roundtrip.go), to the proxy's answer: 502, 503 or 504 for the
// backend's failures, which are logged; 413, 499 or 400 when the client
// was at fault.
func (p *Proxy) fail(ctx *fasthttp.RequestCtx, x *exchange, err error) {
	switch {
	case errors.Is(err, errBodyTooLarge): // mid-stream: the upload was cut
		x.answer(ctx, BodyTooLarge, "request body too large\n", fasthttp.StatusRequestEntityTooLarge)
		return
	case errors.Is(err, errClientGone):
		x.answer(ctx, ClientGone, "", StatusClientClosedRequest)
		return
	case errors.Is(err, errBadTarget):
		x.answer(ctx, BadRequest, "malformed request\n", fasthttp.StatusBadRequest)
		return
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, errHeadTimeout):
		x.answer(ctx, GatewayTimeout, "backend timeout\n", fasthttp.StatusGatewayTimeout)
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		x.answer(ctx, Unavailable, "backend connection limit reached\n", fasthttp.StatusServiceUnavailable)
	default:
		x.answer(ctx, BadGateway, "bad gateway\n", fasthttp.StatusBadGateway)
	}
	p.errLog.Event().Err(err).Str("backend", x.backend.URL).Msg("forward failed")
}

// ServerErrorHandler answers requests that fasthttp could not parse, with
// the status an operator expects from nginx: 413 for a body over
// EQUALIZER_MAX_BODY_SIZE, 431 for a header over EQUALIZER_MAX_HEADER_SIZE,
// 408 for a read timeout, 400 otherwise. They count like the others.
func (p *Proxy) ServerErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	var x exchange
	status, msg := ParseErrorStatus(err)
	switch status {
	case fasthttp.StatusRequestEntityTooLarge:
		x.outcome = BodyTooLarge
	case fasthttp.StatusRequestHeaderFieldsTooLarge:
		x.outcome = HeaderTooLarge
	case fasthttp.StatusRequestTimeout:
		x.outcome = RequestTimeout
	default:
		x.outcome = BadRequest
	}
	ctx.Error(msg+"\n", status)
	p.Stats.count(x.outcome)
	if p.access != nil {
		p.access.write(ctx, &x, int64(len(msg)+1))
	}
}

// ParseErrorStatus maps a fasthttp request parse error to a status and a
// short message; the admin listener uses it too.
func ParseErrorStatus(err error) (int, string) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return fasthttp.StatusRequestEntityTooLarge, "request body too large"
	case errors.As(err, &small):
		return fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large"
	case errors.As(err, &netErr) && netErr.Timeout():
		return fasthttp.StatusRequestTimeout, "request timeout"
	default:
		return fasthttp.StatusBadRequest, "malformed request"
	}
}
