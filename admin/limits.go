package admin

import (
	"github.com/valyala/fasthttp"

	"gopher-equalizer/limiter"
	"gopher-equalizer/limits"
)

// limitJSON is a limit as GET /limits shows it; unset settings are left
// out. buckets counts the buckets in memory.
type limitJSON struct {
	Name        string            `json:"name"`
	Key         string            `json:"key"`
	Capacity    int64             `json:"capacity,omitempty"`
	Rate        string            `json:"rate,omitempty"`
	RatePerS    float64           `json:"rate_per_sec,omitempty"`
	Mode        string            `json:"mode"`
	Concurrency int64             `json:"concurrency,omitempty"`
	Delay       string            `json:"delay,omitempty"`
	Waiting     int64             `json:"waiting,omitempty"`
	InFlight    int64             `json:"in_flight"`
	Buckets     int               `json:"buckets"`
	Results     map[string]uint64 `json:"decisions"`
}

func (a *API) listLimits(ctx *fasthttp.RequestCtx) {
	out := []limitJSON{}
	if a.cfg.Limits != nil {
		for _, l := range a.cfg.Limits() {
			v := limitJSON{Name: l.Name, Key: l.KeyText, Capacity: l.Capacity, Rate: l.RateText, RatePerS: l.Rate,
				Mode: l.Mode.String(), Concurrency: l.Concurrency, Waiting: l.Waiting.Load(), Results: map[string]uint64{}}
			if l.Delay > 0 {
				v.Delay = l.Delay.String()
			}
			if l.Lim != nil {
				v.Buckets = l.Lim.Len()
			}
			if l.InFlight != nil {
				v.InFlight, v.Buckets = l.InFlight.Total(), l.InFlight.Keys()
			}
			for r := range limits.NumResults {
				v.Results[limits.ResultNames[r]] = l.Decisions[r].Load()
			}
			out = append(out, v)
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// limiterFor finds the limiter of the {limit} route parameter (the limit
// default for /buckets) and the path its buckets live under, or answers
// 404.
func (a *API) limiterFor(ctx *fasthttp.RequestCtx) (*limiter.Limiter, string) {
	name, ok := ctx.UserValue("limit").(string)
	if !ok {
		return a.lim, "/buckets"
	}
	if a.cfg.Limits != nil {
		for _, l := range a.cfg.Limits() {
			if l.Name == name && l.Lim == nil {
				writeError(ctx, fasthttp.StatusNotFound, "a concurrency limit has no buckets: GET /limits shows its requests in flight")
				return nil, ""
			}
			if l.Name == name {
				return l.Lim, "/limits/" + name + "/buckets"
			}
		}
	}
	writeError(ctx, fasthttp.StatusNotFound, "limit not found (GET /limits lists them)")
	return nil, ""
}
