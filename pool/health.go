package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// HealthConfig controls active health checks.
type HealthConfig struct {
	Interval time.Duration // time between rounds of probes
	Timeout  time.Duration // one probe's deadline, connect to last byte read
	Path     string        // GET path, or "grpc[:SERVICE]" (grpchealth.go)
	// Status lists the statuses that count as healthy; nil means 200-399,
	// like HAProxy's "option httpchk".
	Status StatusSet
	// Fall is how many failed probes in a row take a healthy backend out of
	// rotation, Rise how many good probes bring it back. 1 and 1 mean the
	// next probe decides, as HAProxy's "fall 1 rise 1".
	Fall, Rise int
}

// maxProbeBody is how much of a health page a probe reads. The probe uses a
// connection of its own for each round and closes it, so a longer page, or
// a head and body written apart, can never be mistaken for the next answer.
const maxProbeBody = 64 << 10

// StatusSet is a list of status ranges, such as 200-399 or 200,204.
type StatusSet [][2]int

// ParseStatusSet parses EQUALIZER_HEALTH_STATUS: comma-separated codes or
// ranges of codes between 100 and 599.
func ParseStatusSet(s string) (StatusSet, error) {
	var set StatusSet
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return nil, fmt.Errorf("%q is not a status code or a range such as 200-399", part)
		}
		set = append(set, [2]int{a, b})
	}
	return set, nil
}

// Has reports whether code is in the set (200-399 for an empty set).
func (s StatusSet) Has(code int) bool {
	if len(s) == 0 {
		return code >= 200 && code <= 399
	}
	for _, r := range s {
		if code >= r[0] && code <= r[1] {
			return true
		}
	}
	return false
}

// Checker probes every backend each Interval and updates the pool. Run it in
// one goroutine; CheckOnce runs a single round, which is what tests call.
type Checker struct {
	pool   *Pool
	conf   atomic.Pointer[HealthConfig] // replaced by SetConfig (reload)
	log    zerolog.Logger
	probes map[*Backend]*probeState // one per backend in the pool, kept across rounds
}

type probeState struct {
	backend *Backend
	streak  int // consecutive results that disagree with the current state
}

// probeResult is one probe: healthy or not, and why.
type probeResult struct {
	ok      bool
	status  int
	err     error
	latency time.Duration
}

// NewChecker prepares probes for every backend of p.
func NewChecker(p *Pool, cfg HealthConfig, log zerolog.Logger) *Checker {
	c := &Checker{pool: p, log: log}
	c.SetConfig(cfg)
	return c
}

// SetConfig changes the probe settings from the next round on.
func (c *Checker) SetConfig(cfg HealthConfig) {
	cfg.Fall = max(cfg.Fall, 1)
	cfg.Rise = max(cfg.Rise, 1)
	c.conf.Store(&cfg)
}

func (c *Checker) cfg() *HealthConfig { return c.conf.Load() }

// Run probes until ctx is done. A panic in a round is logged and the loop
// goes on: a broken probe must not freeze the healthy set.
func (c *Checker) Run(ctx context.Context) {
	interval := c.cfg().Interval
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		c.safeRound()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := c.cfg().Interval; now != interval {
			interval = now
			t.Reset(interval)
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

// CheckOnce probes every backend of the pool once, in parallel, and
// applies the results. Backends added or removed since the last round are
// picked up here.
func (c *Checker) CheckOnce() {
	backends := c.pool.Backends()
	probes := make(map[*Backend]*probeState, len(backends))
	states := make([]*probeState, len(backends))
	for i, b := range backends {
		ps := c.probes[b]
		if ps == nil {
			ps = &probeState{backend: b}
		}
		probes[b], states[i] = ps, ps
	}
	c.probes = probes
	results := make([]probeResult, len(states))
	var wg sync.WaitGroup
	for i, ps := range states {
		wg.Go(func() { results[i] = c.probe(ps.backend) })
	}
	wg.Wait()
	for i, ps := range states {
		c.apply(ps, results[i])
	}
}

func (c *Checker) apply(ps *probeState, r probeResult) {
	b := ps.backend
	if r.ok == b.Healthy() {
		ps.streak = 0
		return
	}
	ps.streak++
	need := c.cfg().Fall
	if r.ok {
		need = c.cfg().Rise
	}
	if ps.streak < need {
		return
	}
	ps.streak = 0
	if c.pool.SetHealthy(b, r.ok) {
		ev := c.log.Warn()
		if r.ok {
			ev = c.log.Info()
		}
		if r.status != 0 {
			ev = ev.Int("status", r.status)
		}
		if r.err != nil {
			ev = ev.Err(r.err).Bool("timeout", errors.Is(r.err, fasthttp.ErrTimeout))
		}
		ev.Str("backend", b.URL).Bool("healthy", r.ok).Dur("probe_latency", r.latency).
			Int("healthy_backends", len(c.pool.Healthy())).Msg("backend health changed")
	}
}

// probe sends one GET on a fresh connection, reads the answer (at most
// maxProbeBody of its body) and closes the connection.
func (c *Checker) probe(b *Backend) probeResult {
	if _, grpc := GRPCHealthService(c.cfg().Path); grpc || b.H2 {
		return c.probeH2(b)
	}
	start := time.Now()
	deadline := start.Add(c.cfg().Timeout)
	result := func(status int, err error) probeResult {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("%w after %v", fasthttp.ErrTimeout, c.cfg().Timeout)
		}
		return probeResult{ok: err == nil && c.cfg().Status.Has(status), status: status, err: err, latency: time.Since(start)}
	}
	conn, err := net.DialTimeout("tcp", b.Addr, c.cfg().Timeout)
	if err != nil {
		return result(0, err)
	}
	if conn, err = b.WrapTLS(conn, deadline); err != nil {
		return result(0, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return result(0, err)
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.cfg().Path)
	req.Header.SetHost(b.Addr)
	req.Header.Set(fasthttp.HeaderUserAgent, "gopher-equalizer-health")
	req.SetConnectionClose()
	bw := bufio.NewWriter(conn)
	if err := req.Write(bw); err != nil {
		return result(0, err)
	}
	if err := bw.Flush(); err != nil {
		return result(0, err)
	}
	err = resp.ReadLimitBody(bufio.NewReader(conn), maxProbeBody)
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		err = nil // the status is in; the rest of a long page does not matter
	}
	return result(resp.StatusCode(), err)
}
