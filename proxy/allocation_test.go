//go:build !race

package proxy

import (
	"bytes"
	"fmt"
	"gopher-equalizer/limiter"
	"gopher-equalizer/limits"
	"gopher-equalizer/pool"
	"gopher-equalizer/route"
	"gopher-equalizer/upstream"
	"testing"
	"time"
)

// TestForwardAllocatesNothing holds the zero-allocation promise of the hot
// path: client key, limiter, pick and forward, once connections are warm.
func TestForwardAllocatesNothing(t *testing.T) {
	for _, withLimiter := range []bool{false, true} {
		ctx, serve := benchContext(t, withLimiter)
		// Warm the bucket and the connection pool: a connection rests
		// upstream.Settle before reuse, so the pool first grows to its size.
		for start := time.Now(); time.Since(start) < 3*upstream.Settle; {
			serve()
		}
		if n := testing.AllocsPerRun(1000, serve); n != 0 {
			t.Errorf("limiter=%v: %v allocations per forwarded request, want 0", withLimiter, n)
		}
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("status %d", ctx.Response.StatusCode())
		}
	}
}

// TestSeveralLimitsAllocateNothing: a route that charges four limits
// (address, header, cookie and query keys, one in shadow mode), with the
// IETF fields on the forwarded answer, still allocates nothing.
func TestSeveralLimitsAllocateNothing(t *testing.T) {
	ctx, serve, h := benchProxy(t, true, nil)
	lims := map[string]*limits.Limit{"default": h.DefaultLimit()}
	names := []string{"default"}
	for i, recipe := range []string{"header:User-Agent", "ip+cookie:session", "query:id"} {
		k, err := limits.ParseKey(recipe)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprint("l", i)
		lims[name] = &limits.Limit{Name: name, Key: k, Capacity: 1 << 40, Rate: 1e9, Mode: limits.Mode(i % 2),
			Lim: limiter.New(limiter.Config{Capacity: 1 << 40, RatePerSec: 1e9}, limiter.NewMemoryStore())}
		names = append(names, name)
	}
	table, _, err := route.Compile([]route.Spec{{Name: "api", Match: route.MatchSpec{PathPrefix: "/api/"}, Limits: names}},
		map[string]*pool.Pool{route.DefaultPool: h.Routes().Routes()[0].Pool}, lims)
	if err != nil {
		t.Fatal(err)
	}
	h.SetRoutes(table)
	h.cfg.RateLimitHeaders = true
	for start := time.Now(); time.Since(start) < 3*upstream.Settle; {
		serve()
	}
	if n := testing.AllocsPerRun(1000, serve); n != 0 {
		t.Errorf("%v allocations per request through 4 limits, want 0", n)
	}
	if ctx.Response.StatusCode() != 200 || !bytes.Contains(ctx.Response.Header.Peek("RateLimit-Policy"), []byte(`"l2";q=1099511627776`)) {
		t.Fatalf("status %d, RateLimit-Policy %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("RateLimit-Policy"))
	}
}
