package proxy

import (
	"context"
	"path/filepath"
	"testing"

	"gopher-equalizer/accesslog"
)

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

// BenchmarkAccessLog is the forward path with the access log writing to a
// file, against BenchmarkProxyForward/Limiter. Build with -tags nometrics
// to see what metrics cost on the same path.
func BenchmarkAccessLog(b *testing.B) {
	l, err := accesslog.Open(filepath.Join(b.TempDir(), "access.log"), func(error) {})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go l.Run(ctx)
	defer func() { cancel(); l.Wait() }()
	_, serve := benchContextLog(b, true, l)
	serve()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		serve()
	}
	b.StopTimer()
	if d := l.Dropped(); d > 0 {
		b.Logf("%d lines dropped", d)
	}
}
