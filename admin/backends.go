package admin

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/goccy/go-json"
	"github.com/valyala/fasthttp"

	"gopher-equalizer/metrics"
	"gopher-equalizer/pool"
)

// The /backends API: list, add, change weight, drain, remove. Changes go to
// the pool under its own lock and reach requests as one atomic pointer
// swap of the healthy set; requests never wait for them.

// backendJSON is a backend as the API shows it. id is host:port, the name
// the other routes take.
type backendJSON struct {
	ID        string            `json:"id"`
	URL       string            `json:"url"`
	Weight    int               `json:"weight"`
	State     string            `json:"state"` // active, draining, drained
	Healthy   bool              `json:"healthy"`
	InFlight  int64             `json:"in_flight"`
	Requests  uint64            `json:"requests"`
	Failures  uint64            `json:"failures"`
	Responses map[string]uint64 `json:"responses"`
}

func backendView(b *pool.Backend) backendJSON {
	v := backendJSON{
		ID: b.Addr, URL: b.URL, Weight: b.Weight(), State: b.State().String(), Healthy: b.Healthy(),
		InFlight: b.InFlight(), Requests: b.Stats.Requests(), Failures: b.Stats.FailuresTotal(),
		Responses: map[string]uint64{},
	}
	for class := 1; class <= 5; class++ {
		v.Responses[fmt.Sprintf("%dxx", class)] = b.Stats.Responses(class)
	}
	return v
}

// parseWeight reads an optional weight field, def when absent.
func parseWeight(raw json.RawMessage, def int64) (int64, error) {
	if !present(raw) {
		return def, nil
	}
	return parseInt("weight", raw, 1, pool.MaxWeight)
}

// pools lists every pool, "default" first.
func (a *API) pools() []metrics.NamedPool {
	if a.cfg.Pools != nil {
		return a.cfg.Pools()
	}
	return []metrics.NamedPool{{Name: "default", Pool: a.pool}}
}

// poolFor finds the pool named by the {pool} route parameter ("default"
// for /backends), or answers 404.
func (a *API) poolFor(ctx *fasthttp.RequestCtx) (string, *pool.Pool) {
	name, ok := ctx.UserValue("pool").(string)
	if !ok {
		return "default", a.pool
	}
	for _, np := range a.pools() {
		if np.Name == name {
			return name, np.Pool
		}
	}
	writeError(ctx, fasthttp.StatusNotFound, "pool not found (GET /pools lists them)")
	return "", nil
}

// poolJSON is a pool as GET /pools shows it.
type poolJSON struct {
	Name     string        `json:"name"`
	Strategy string        `json:"strategy"`
	Healthy  int           `json:"healthy"`
	Backends []backendJSON `json:"backends"`
}

func (a *API) listPools(ctx *fasthttp.RequestCtx) {
	out := []poolJSON{}
	for _, np := range a.pools() {
		v := poolJSON{Name: np.Name, Strategy: np.Pool.StrategyName(), Healthy: len(np.Pool.Healthy()), Backends: []backendJSON{}}
		for _, b := range np.Pool.Backends() {
			v.Backends = append(v.Backends, backendView(b))
		}
		out = append(out, v)
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (a *API) listBackends(ctx *fasthttp.RequestCtx) {
	_, p := a.poolFor(ctx)
	if p == nil {
		return
	}
	out := []backendJSON{}
	for _, b := range p.Backends() {
		out = append(out, backendView(b))
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// backendFor finds the pool and the backend named by the route, or
// answers 404.
func (a *API) backendFor(ctx *fasthttp.RequestCtx) (string, *pool.Pool, *pool.Backend) {
	name, p := a.poolFor(ctx)
	if p == nil {
		return "", nil, nil
	}
	id, _ := ctx.UserValue("id").(string)
	if u, err := url.PathUnescape(id); err == nil {
		id = u
	}
	b := p.Lookup(id)
	if b == nil {
		writeError(ctx, fasthttp.StatusNotFound, "backend not found (the id is host:port, as GET /backends lists it)")
	}
	return name, p, b
}

func (a *API) getBackend(ctx *fasthttp.RequestCtx) {
	if _, _, b := a.backendFor(ctx); b != nil {
		writeJSON(ctx, fasthttp.StatusOK, backendView(b))
	}
}

// addBackend: {"url": "http://10.0.0.7:8080", "weight": 2}.
func (a *API) addBackend(ctx *fasthttp.RequestCtx) {
	poolName, p := a.poolFor(ctx)
	if p == nil {
		return
	}
	var rawURL, rawWeight json.RawMessage
	if err := decodeObject(ctx.PostBody(), map[string]*json.RawMessage{"url": &rawURL, "weight": &rawWeight}, "url, weight"); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	var u string
	if !present(rawURL) || rawURL[0] != '"' || json.Unmarshal(rawURL, &u) != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "url is required: a string such as http://10.0.0.7:8080")
		return
	}
	weight, err := parseWeight(rawWeight, 1)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if a.cfg.NewBackend == nil {
		writeError(ctx, fasthttp.StatusNotImplemented, "adding backends is not configured")
		return
	}
	b, err := a.cfg.NewBackend(fmt.Sprintf("%s weight=%d", u, weight))
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "url: "+err.Error())
		return
	}
	if p.Lookup(b.Addr) != nil || p.Lookup(b.URL) != nil {
		writeError(ctx, fasthttp.StatusConflict, pool.ErrExists.Error())
		return
	}
	if !a.changeBackend(ctx, poolName, p, pool.Change{URL: b.URL, Weight: b.Weight(), State: "active"}) {
		return
	}
	added := p.Lookup(b.URL)
	if added == nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "the backend was stored but is not in the pool")
		return
	}
	a.log.Info().Str("pool", poolName).Str("backend", added.URL).Int("weight", added.Weight()).Msg("backend added through the admin API")
	location := "/backends/" + added.Addr
	if _, named := ctx.UserValue("pool").(string); named {
		location = "/pools/" + poolName + location
	}
	ctx.Response.Header.Set(fasthttp.HeaderLocation, location)
	writeJSON(ctx, fasthttp.StatusCreated, backendView(added))
}

// changeBackend stores c for every instance (when a store is configured;
// 503 if it is down, and nothing changes) and applies it here.
func (a *API) changeBackend(ctx *fasthttp.RequestCtx, poolName string, p *pool.Pool, c pool.Change) bool {
	if a.cfg.SaveBackend != nil {
		if err := a.storeCall(func(sc context.Context) error { return a.cfg.SaveBackend(sc, poolName, c) }); err != nil {
			a.writeStoreError(ctx, err)
			return false
		}
	}
	if err := p.Apply(c, a.cfg.NewBackend); err != nil && !errors.Is(err, pool.ErrExists) {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// patchBackend: {"weight": 3} and/or {"state": "drained" | "active"}.
// "drained" stops new requests, lets the ones in flight finish and keeps
// the backend; "active" puts it back.
func (a *API) patchBackend(ctx *fasthttp.RequestCtx) {
	poolName, p, b := a.backendFor(ctx)
	if b == nil {
		return
	}
	var rawWeight, rawState json.RawMessage
	if err := decodeObject(ctx.PostBody(), map[string]*json.RawMessage{"weight": &rawWeight, "state": &rawState}, "weight, state"); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if !present(rawWeight) && !present(rawState) {
		writeError(ctx, fasthttp.StatusBadRequest, "nothing to change: give weight and/or state")
		return
	}
	weight, err := parseWeight(rawWeight, 0)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	var state string
	if present(rawState) {
		if json.Unmarshal(rawState, &state) != nil || (state != "active" && state != "drained") {
			writeError(ctx, fasthttp.StatusBadRequest, `state must be "active" or "drained"`)
			return
		}
	}
	c := pool.ChangeOf(b)
	if weight > 0 {
		c.Weight = int(weight)
	}
	if state != "" {
		c.State = state
	}
	if !a.changeBackend(ctx, poolName, p, c) {
		return
	}
	a.log.Info().Str("backend", b.URL).Int("weight", b.Weight()).Str("state", b.State().String()).Msg("backend changed through the admin API")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// deleteBackend drains the backend and removes it once its requests are
// done: 202 with the backend, now draining.
func (a *API) deleteBackend(ctx *fasthttp.RequestCtx) {
	poolName, p, b := a.backendFor(ctx)
	if b == nil {
		return
	}
	c := pool.ChangeOf(b)
	c.State = "removed"
	if !a.changeBackend(ctx, poolName, p, c) {
		return
	}
	a.log.Info().Str("backend", b.URL).Msg("backend draining, to be removed, through the admin API")
	writeJSON(ctx, fasthttp.StatusAccepted, backendView(b))
}
