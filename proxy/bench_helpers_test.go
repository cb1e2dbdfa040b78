package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/limiter"
)

// benchContext returns a RequestCtx and a function that resets it to a
// typical request and serves it through a proxy to a real backend.
func benchContext(tb testing.TB, withLimiter bool) (*fasthttp.RequestCtx, func()) {
	return benchContextLog(tb, withLimiter, nil)
}

// benchContextLog is benchContext with an access log writer.
func benchContextLog(tb testing.TB, withLimiter bool, access io.Writer) (*fasthttp.RequestCtx, func()) {
	ctx, serve, _ := benchProxy(tb, withLimiter, access)
	return ctx, serve
}

// benchProxy is benchContextLog that also returns the proxy.
func benchProxy(tb testing.TB, withLimiter bool, access io.Writer) (*fasthttp.RequestCtx, func(), *Proxy) {
	tb.Helper()
	url, _ := startQuietBackend(tb)
	var lim *limiter.Limiter
	if withLimiter {
		lim = limiter.New(limiter.Config{Capacity: 1 << 40, RatePerSec: 1e9}, limiter.NewMemoryStore())
	}
	h := startProxyT(tb, options{lim: lim, timeout: 5 * time.Second, reqID: "X-Request-ID", access: access}, url).proxy
	var tmpl fasthttp.Request
	tmpl.Header.SetMethod("GET")
	tmpl.SetRequestURI("/api/v1/items?id=42")
	tmpl.Header.SetHost("shop.test")
	tmpl.Header.Set("User-Agent", "bench")
	tmpl.Header.Set("Accept", "*/*")
	tmpl.Header.Set("X-Forwarded-For", "198.51.100.7")
	var ctx fasthttp.RequestCtx
	ctx.Init(&tmpl, &net.TCPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 5555}, nil)
	return &ctx, func() {
		tmpl.CopyTo(&ctx.Request)
		ctx.Response.Reset()
		h.ServeHTTP(&ctx)
	}, h
}

func startQuietBackend(tb testing.TB) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	body := []byte("hello from the backend")
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }}
	go s.Serve(ln) //nolint:errcheck
	tb.Cleanup(func() { _ = s.Shutdown() })
	return "http://" + ln.Addr().String(), nil
}
