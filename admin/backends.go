package admin

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/goccy/go-json"
	"github.com/valyala/fasthttp"

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

func (a *API) listBackends(ctx *fasthttp.RequestCtx) {
	out := []backendJSON{}
	for _, b := range a.pool.Backends() {
		out = append(out, backendView(b))
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// backendFor finds the backend named by the {id} route parameter, or
// answers 404.
func (a *API) backendFor(ctx *fasthttp.RequestCtx) *pool.Backend {
	id, _ := ctx.UserValue("id").(string)
	if u, err := url.PathUnescape(id); err == nil {
		id = u
	}
	b := a.pool.Lookup(id)
	if b == nil {
		writeError(ctx, fasthttp.StatusNotFound, "backend not found (the id is host:port, as GET /backends lists it)")
	}
	return b
}

func (a *API) getBackend(ctx *fasthttp.RequestCtx) {
	if b := a.backendFor(ctx); b != nil {
		writeJSON(ctx, fasthttp.StatusOK, backendView(b))
	}
}

// addBackend: {"url": "http://10.0.0.7:8080", "weight": 2}.
func (a *API) addBackend(ctx *fasthttp.RequestCtx) {
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
	if a.pool.Lookup(b.Addr) != nil || a.pool.Lookup(b.URL) != nil {
		writeError(ctx, fasthttp.StatusConflict, pool.ErrExists.Error())
		return
	}
	if !a.changeBackend(ctx, pool.Change{URL: b.URL, Weight: b.Weight(), State: "active"}) {
		return
	}
	added := a.pool.Lookup(b.URL)
	if added == nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "the backend was stored but is not in the pool")
		return
	}
	a.log.Info().Str("backend", added.URL).Int("weight", added.Weight()).Msg("backend added through the admin API")
	ctx.Response.Header.Set(fasthttp.HeaderLocation, "/backends/"+added.Addr)
	writeJSON(ctx, fasthttp.StatusCreated, backendView(added))
}

// changeBackend stores c for every instance (when a store is configured;
// 503 if it is down, and nothing changes) and applies it here.
func (a *API) changeBackend(ctx *fasthttp.RequestCtx, c pool.Change) bool {
	if a.cfg.SaveBackend != nil {
		if err := a.storeCall(func(sc context.Context) error { return a.cfg.SaveBackend(sc, c) }); err != nil {
			a.writeStoreError(ctx, err)
			return false
		}
	}
	if err := a.pool.Apply(c, a.cfg.NewBackend); err != nil && !errors.Is(err, pool.ErrExists) {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// patchBackend: {"weight": 3} and/or {"state": "drained" | "active"}.
// "drained" stops new requests, lets the ones in flight finish and keeps
// the backend; "active" puts it back.
func (a *API) patchBackend(ctx *fasthttp.RequestCtx) {
	b := a.backendFor(ctx)
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
	if !a.changeBackend(ctx, c) {
		return
	}
	a.log.Info().Str("backend", b.URL).Int("weight", b.Weight()).Str("state", b.State().String()).Msg("backend changed through the admin API")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// deleteBackend drains the backend and removes it once its requests are
// done: 202 with the backend, now draining.
func (a *API) deleteBackend(ctx *fasthttp.RequestCtx) {
	b := a.backendFor(ctx)
	if b == nil {
		return
	}
	c := pool.ChangeOf(b)
	c.State = "removed"
	if !a.changeBackend(ctx, c) {
		return
	}
	a.log.Info().Str("backend", b.URL).Msg("backend draining, to be removed, through the admin API")
	writeJSON(ctx, fasthttp.StatusAccepted, backendView(b))
}
