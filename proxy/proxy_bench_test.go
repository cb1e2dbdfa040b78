package proxy

import "testing"

// BenchmarkProxyForward measures the handler on the whole forward path
// (key, limiter, pick, forward to a real backend on loopback).
func BenchmarkProxyForward(b *testing.B) {
	for _, c := range []struct {
		name    string
		limiter bool
	}{{"NoLimiter", false}, {"Limiter", true}} {
		b.Run(c.name, func(b *testing.B) {
			_, serve := benchContext(b, c.limiter)
			serve()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				serve()
			}
		})
	}
}
