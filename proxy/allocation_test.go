//go:build !race

package proxy

import "testing"

// TestForwardAllocatesNothing holds the zero-allocation promise of the hot
// path: client key, limiter, pick and forward, once connections are warm.
func TestForwardAllocatesNothing(t *testing.T) {
	for _, withLimiter := range []bool{false, true} {
		ctx, serve := benchContext(t, withLimiter)
		serve() // warm the connection pool and the bucket
		if n := testing.AllocsPerRun(1000, serve); n != 0 {
			t.Errorf("limiter=%v: %v allocations per forwarded request, want 0", withLimiter, n)
		}
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("status %d", ctx.Response.StatusCode())
		}
	}
}
