package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"gopher-equalizer/limiter"
	"gopher-equalizer/pool"
	"gopher-equalizer/pool/pooltest"
	"gopher-equalizer/upstream"
)

// seen is what a test backend received.
type seen struct {
	method, uri, host, body string
	header                  http.Header
}

// startBackend serves handler on 127.0.0.1 and records every request.
func startBackend(t *testing.T, handler fasthttp.RequestHandler) (url string, got chan seen) {
	t.Helper()
	got = make(chan seen, 100)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{
		DisableHeaderNamesNormalizing: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			h := http.Header{}
			for k, v := range ctx.Request.Header.All() {
				h[string(k)] = append(h[string(k)], string(v))
			}
			got <- seen{string(ctx.Method()), string(ctx.RequestURI()), string(ctx.Host()), string(ctx.PostBody()), h}
			if handler != nil {
				handler(ctx)
			}
		},
	}
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = s.Shutdown() })
	return "http://" + ln.Addr().String(), got
}

type harness struct {
	addr  string
	proxy *Proxy
	pool  *pool.Pool
	lim   *limiter.Limiter
}

type options struct {
	timeout  time.Duration
	strategy string
	lim      *limiter.Limiter
	key      string
	trusted  []string
	headers  bool      // RateLimitHeaders
	reqID    string    // RequestIDHeader
	access   io.Writer // AccessLog
	maxConns int       // per backend; 64 when 0
}

// startProxy serves a proxy over backends on 127.0.0.1.
func startProxy(t *testing.T, opt options, backends ...string) *harness {
	return startProxyT(t, opt, backends...)
}

func startProxyT(t testing.TB, opt options, backends ...string) *harness {
	t.Helper()
	if opt.timeout == 0 {
		opt.timeout = 5 * time.Second
	}
	if opt.strategy == "" {
		opt.strategy = "round_robin"
	}
	if opt.key == "" {
		opt.key = "ip"
	}
	if opt.maxConns == 0 {
		opt.maxConns = 64
	}
	var bs []*pool.Backend
	for _, u := range backends {
		b, err := pool.NewBackend(u, upstream.Options{DialTimeout: time.Second, MaxConns: opt.maxConns})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	strategy, err := pool.NewStrategy(opt.strategy)
	if err != nil {
		t.Fatal(err)
	}
	p := pool.New(bs, strategy)
	key, err := ParseClientKey(opt.key, opt.trusted, 128)
	if err != nil {
		t.Fatal(err)
	}
	px := New(Config{BackendTimeout: opt.timeout, RateLimitHeaders: opt.headers, RequestIDHeader: opt.reqID, AccessLog: opt.access}, p, opt.lim, key, zerolog.Nop())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: px.ServeHTTP, DisableHeaderNamesNormalizing: true, NoDefaultServerHeader: true, NoDefaultContentType: true}
	go s.Serve(LenientListener{Listener: ln}) //nolint:errcheck
	t.Cleanup(func() { _ = s.Shutdown() })
	return &harness{addr: ln.Addr().String(), proxy: px, pool: p, lim: opt.lim}
}

// raw sends one raw HTTP/1.1 request and returns the parsed response.
func raw(t *testing.T, addr, request string) (*http.Response, string) {
	t.Helper()
	return rawFrom(t, net.Dialer{}, addr, request)
}

// rawFrom is raw over a connection made by d.
func rawFrom(t *testing.T, d net.Dialer, addr, request string) (*http.Response, string) {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// startRawBackend accepts connections on 127.0.0.1, runs serve on each and
// closes it: a backend that misbehaves below HTTP.
func startRawBackend(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	url, _ := acceptRaw(t, serve)
	return url
}

// acceptRaw is pooltest.RawBackend.
func acceptRaw(t *testing.T, serve func(net.Conn)) (string, *atomic.Int64) {
	return pooltest.RawBackend(t, serve)
}

func recv(t *testing.T, got chan seen) seen {
	t.Helper()
	select {
	case s := <-got:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("backend received nothing")
		return seen{}
	}
}

func TestForwardsMethodPathQueryHeadersBody(t *testing.T) {
	url, got := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(201)
		ctx.Response.Header.Set("X-Backend", "yes")
		ctx.SetBodyString("created")
	})
	h := startProxy(t, options{}, url)
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"} {
		body := ""
		if method != "GET" && method != "OPTIONS" {
			body = "payload-" + method
		}
		req := fmt.Sprintf("%s /a/../b//c%%2Fd?q=1&q=2&x=%%20y HTTP/1.1\r\nHost: example.test\r\nx-lower-Case: v1\r\nContent-Length: %d\r\n\r\n%s", method, len(body), body)
		resp, respBody := raw(t, h.addr, req)
		if resp.StatusCode != 201 || respBody != "created" || resp.Header.Get("X-Backend") != "yes" {
			t.Fatalf("%s: got %d %q %v", method, resp.StatusCode, respBody, resp.Header)
		}
		s := recv(t, got)
		if s.method != method || s.uri != "/a/../b//c%2Fd?q=1&q=2&x=%20y" || s.host != "example.test" || s.body != body {
			t.Fatalf("%s: backend saw %+v", method, s)
		}
		if v := s.header["x-lower-Case"]; len(v) != 1 || v[0] != "v1" {
			t.Fatalf("%s: header name or value changed: %v", method, s.header)
		}
	}
}

func TestHopByHopHeadersAreDroppedBothWays(t *testing.T) {
	url, got := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Response.Header
		h.Set("Connection", "X-Resp-Hop")
		h.Set("X-Resp-Hop", "1")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authenticate", "Basic")
		h.Set("Upgrade", "h2c")
		h.Set("Proxy-Connection", "keep-alive")
		h.Set("X-End-To-End", "kept")
		ctx.SetBodyString("ok")
	})
	h := startProxy(t, options{}, url)
	req := "GET / HTTP/1.1\r\nHost: h\r\n" +
		"Connection: keep-alive, X-Custom-Hop, X-Other\r\n" +
		"X-Custom-Hop: 1\r\nX-Other: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n" +
		"Proxy-Authorization: Basic Zm9v\r\nTE: gzip\r\nTrailer: X-T\r\nUpgrade: websocket\r\nX-End-To-End: kept\r\n\r\n"
	resp, _ := raw(t, h.addr, req)
	s := recv(t, got)
	for _, name := range []string{"Connection", "X-Custom-Hop", "X-Other", "Keep-Alive", "Proxy-Connection",
		"Proxy-Authorization", "TE", "Trailer", "Upgrade"} {
		for k := range s.header {
			if strings.EqualFold(k, name) {
				t.Errorf("request header %s reached the backend: %v", name, s.header)
			}
		}
	}
	if s.header["X-End-To-End"] == nil {
		t.Errorf("end-to-end request header was dropped")
	}
	for _, name := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade", "Proxy-Connection"} {
		if v := resp.Header.Get(name); v != "" {
			t.Errorf("response header %s reached the client: %q", name, v)
		}
	}
	if resp.Header.Get("X-End-To-End") != "kept" {
		t.Errorf("end-to-end response header was dropped")
	}
	if resp.Close {
		t.Errorf("client connection closed because the backend named headers in Connection")
	}

	// TE: trailers is the one TE value that passes.
	raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nTE: trailers, deflate;q=0.5\r\n\r\n")
	if s := recv(t, got); len(s.header["TE"]) != 1 || s.header["TE"][0] != "trailers" {
		t.Errorf("TE: want trailers, backend saw %v", s.header["TE"])
	}
	// A client's Connection: close is honoured towards the client only.
	resp, _ = raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if s := recv(t, got); s.header["Connection"] != nil {
		t.Errorf("Connection: close reached the backend")
	}
	if !resp.Close {
		t.Errorf("client asked to close but the proxy kept the connection")
	}
}

func TestXForwardedHeaders(t *testing.T) {
	url, got := startBackend(t, nil)
	h := startProxy(t, options{}, url)
	raw(t, h.addr, "GET / HTTP/1.1\r\nHost: shop.test:8443\r\nX-Forwarded-For: 203.0.113.7, 10.1.1.1\r\n\r\n")
	s := recv(t, got)
	if v := s.header["X-Forwarded-For"]; len(v) != 1 || v[0] != "203.0.113.7, 10.1.1.1, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %v", v)
	}
	if v := s.header["X-Forwarded-Proto"]; len(v) != 1 || v[0] != "http" {
		t.Errorf("X-Forwarded-Proto = %v", v)
	}
	if v := s.header["X-Forwarded-Host"]; len(v) != 1 || v[0] != "shop.test:8443" {
		t.Errorf("X-Forwarded-Host = %v", v)
	}
	if s.host != "shop.test:8443" {
		t.Errorf("Host = %q, want it preserved", s.host)
	}
	raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if v := recv(t, got).header["X-Forwarded-For"]; len(v) != 1 || v[0] != "127.0.0.1" {
		t.Errorf("X-Forwarded-For without a prior value = %v", v)
	}
}

func TestErrorStatuses(t *testing.T) {
	t.Run("503 without a healthy backend", func(t *testing.T) {
		url, _ := startBackend(t, nil)
		h := startProxy(t, options{}, url)
		h.pool.SetHealthy(h.pool.Backends()[0], false)
		resp, body := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp.StatusCode != 503 || !strings.Contains(body, "no healthy backend") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if h.proxy.Stats.Requests[Unavailable].Load() != 1 {
			t.Errorf("503 not counted")
		}
	})
	t.Run("502 when the backend refuses connections", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		h := startProxy(t, options{}, "http://"+addr)
		h.pool.PassiveFails = 2
		resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp.StatusCode != 502 {
			t.Fatalf("got %d", resp.StatusCode)
		}
		if !h.pool.Backends()[0].Healthy() {
			t.Errorf("one refused request counted as two connection failures")
		}
		if h.proxy.Stats.Requests[BadGateway].Load() != 1 || h.pool.Backends()[0].Stats.FailuresTotal() != 1 {
			t.Errorf("502 not counted")
		}
	})
	t.Run("502 on a malformed response", func(t *testing.T) {
		url := startRawBackend(t, func(c net.Conn) {
			buf := make([]byte, 4096)
			c.Read(buf) //nolint:errcheck
			io.WriteString(c, "NOT HTTP AT ALL\r\n\r\n")
		})
		h := startProxy(t, options{}, url)
		if resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 502 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("502 when the backend resets the connection", func(t *testing.T) {
		url := startRawBackend(t, func(c net.Conn) {
			c.(*net.TCPConn).SetLinger(0) //nolint:errcheck
		})
		h := startProxy(t, options{}, url)
		if resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 502 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("504 when the backend is too slow", func(t *testing.T) {
		release := make(chan struct{})
		url, _ := startBackend(t, func(ctx *fasthttp.RequestCtx) { <-release })
		t.Cleanup(func() { close(release) }) // runs before the backend's Shutdown
		h := startProxy(t, options{timeout: 100 * time.Millisecond}, url)
		resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp.StatusCode != 504 || h.proxy.Stats.Requests[GatewayTimeout].Load() != 1 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
}

func TestRoundRobinThroughProxyIsEven(t *testing.T) {
	var counts [3]atomic.Int64
	var urls []string
	for i := range counts {
		u, _ := startBackend(t, func(*fasthttp.RequestCtx) { counts[i].Add(1) })
		urls = append(urls, u)
	}
	h := startProxy(t, options{}, urls...)
	c := &fasthttp.HostClient{Addr: h.addr}
	const n = 100
	for range n {
		code, _, err := c.Get(nil, "http://"+h.addr+"/")
		if err != nil || code != 200 {
			t.Fatal(code, err)
		}
	}
	for i := range counts {
		if got := counts[i].Load(); got < n/3 || got > n/3+1 {
			t.Errorf("backend %d got %d of %d requests", i, got, n)
		}
	}
}

func TestConnectFailureTriesAnotherBackendAndPassiveHealth(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	live, got := startBackend(t, nil)
	h := startProxy(t, options{}, dead, live)
	h.pool.PassiveFails = 2
	deadBackend := h.pool.Backends()[0]
	// Round robin sends the first request to the dead backend: the request
	// was never sent there, so even a POST goes to the live one.
	resp, _ := raw(t, h.addr, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody")
	if resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	if s := recv(t, got); s.method != "POST" || s.body != "body" {
		t.Fatalf("live backend saw %+v", s)
	}
	if !deadBackend.Healthy() {
		t.Fatal("taken out after one failure with PassiveFails=2")
	}
	for range 3 {
		if resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		recv(t, got)
	}
	if deadBackend.Healthy() {
		t.Fatal("dead backend still in rotation after two connection failures")
	}
	if h.proxy.Stats.Requests[BadGateway].Load() != 0 {
		t.Fatalf("%d clients saw 502", h.proxy.Stats.Requests[BadGateway].Load())
	}
}
