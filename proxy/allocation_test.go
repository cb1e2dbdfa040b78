//go:build !race

package proxy

import (
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
