package pool

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// HealthConfig controls active health checks.
type HealthConfig struct {
	Interval time.Duration // time between rounds of probes
	Timeout  time.Duration // one probe's deadline
	Path     string        // GET path; a status below 500 is healthy
	// Fall is how many failed probes in a row take a healthy backend out of
	// rotation, Rise how many good probes bring it back. 1 and 1 mean the
	// next probe decides, as HAProxy's "fall 1 rise 1".
	Fall, Rise int
}

// Checker probes every backend each Interval and updates the pool. Run it in
// one goroutine; CheckOnce runs a single round, which is what tests call.
type Checker struct {
	pool   *Pool
	cfg    HealthConfig
	log    zerolog.Logger
	probes []*probeState
}

type probeState struct {
	backend *Backend
	client  *fasthttp.HostClient // own connections, so a busy pool never fails a probe
	streak  int                  // consecutive results that disagree with the current state
}

// NewChecker prepares probes for every backend of p.
func NewChecker(p *Pool, cfg HealthConfig, log zerolog.Logger) *Checker {
	cfg.Fall = max(cfg.Fall, 1)
	cfg.Rise = max(cfg.Rise, 1)
	c := &Checker{pool: p, cfg: cfg, log: log}
	for _, b := range p.all {
		c.probes = append(c.probes, &probeState{
			backend: b,
			client: &fasthttp.HostClient{
				Addr:                      b.Addr,
				MaxConns:                  1,
				NoDefaultUserAgentHeader:  true,
				MaxIdemponentCallAttempts: 1,
			},
		})
	}
	return c
}

// Run probes until ctx is done. A panic in a round is logged and the loop
// goes on: a broken probe must not freeze the healthy set.
func (c *Checker) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.safeRound()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Checker) safeRound() {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error().Interface("panic", r).Msg("health check round panicked")
		}
	}()
	c.CheckOnce()
}

// CheckOnce probes every backend once, in parallel, and applies the results.
func (c *Checker) CheckOnce() {
	results := make([]bool, len(c.probes))
	var wg sync.WaitGroup
	for i, ps := range c.probes {
		wg.Go(func() { results[i] = c.probe(ps) })
	}
	wg.Wait()
	for i, ps := range c.probes {
		c.apply(ps, results[i])
	}
}

func (c *Checker) apply(ps *probeState, ok bool) {
	b := ps.backend
	if ok == b.Healthy() {
		ps.streak = 0
		return
	}
	ps.streak++
	need := c.cfg.Fall
	if ok {
		need = c.cfg.Rise
	}
	if ps.streak < need {
		return
	}
	ps.streak = 0
	if c.pool.SetHealthy(b, ok) {
		ev := c.log.Warn()
		if ok {
			ev = c.log.Info()
		}
		ev.Str("backend", b.URL).Bool("healthy", ok).Int("healthy_backends", len(c.pool.Healthy())).Msg("backend health changed")
	}
}

func (c *Checker) probe(ps *probeState) bool {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.cfg.Path)
	req.Header.SetHost(ps.backend.Addr)
	req.Header.Set(fasthttp.HeaderUserAgent, "gopher-equalizer-health")
	resp.SkipBody = true
	if err := ps.client.DoTimeout(req, resp, c.cfg.Timeout); err != nil {
		return false
	}
	return resp.StatusCode() < 500
}
