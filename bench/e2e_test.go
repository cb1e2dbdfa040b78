// Package bench holds the end-to-end benchmarks that span packages and the
// wrk suite (run.sh) that compares gopher-equalizer with nginx, HAProxy and
// Caddy. The benchmarks here run a real client, proxy and backend over
// fasthttputil in-memory listeners:
//
//	go test -run X -bench . -benchmem ./bench
package bench

import (
	"fmt"
	"net"
	"testing"
	"time"

	"gopher-equalizer/limits"
	"gopher-equalizer/metrics"
	"gopher-equalizer/upstream"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gopher-equalizer/admin"
	"gopher-equalizer/limiter"
	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
	"gopher-equalizer/route"
)

// serve runs handler on a new in-memory listener until the benchmark ends.
func serve(b *testing.B, handler fasthttp.RequestHandler) *fasthttputil.InmemoryListener {
	ln := fasthttputil.NewInmemoryListener()
	s := &fasthttp.Server{Handler: handler, NoDefaultServerHeader: true, DisableHeaderNamesNormalizing: true}
	go s.Serve(ln) //nolint:errcheck
	b.Cleanup(func() { _ = s.Shutdown() })
	return ln
}

// setup returns a client for a proxy in front of one in-memory backend.
func setup(b *testing.B, lim *limiter.Limiter) *fasthttp.HostClient {
	return setupRoutes(b, lim, 0)
}

// setupRoutes is setup with a table of n routes (0: the catch-all of a
// configuration without routes) whose last one, a host and a path prefix,
// takes the benchmark's requests: the others are tried first.
func setupRoutes(b *testing.B, lim *limiter.Limiter, n int) *fasthttp.HostClient {
	body := []byte("hello from the backend\n")
	backendLn := serve(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) })
	be, err := pool.NewBackend("http://backend.test:80", upstream.Options{MaxConns: 1024})
	if err != nil {
		b.Fatal(err)
	}
	be.HTTP.Dial = func(string) (net.Conn, error) { return backendLn.Dial() }
	p := pool.New([]*pool.Backend{be}, &pool.RoundRobin{})
	key, _ := proxy.ParseClientKey("ip", nil, 128)
	px := proxy.New(proxy.Config{BackendTimeout: 5 * time.Second}, p, lim, key, zerolog.Nop())
	if n > 0 {
		specs := make([]route.Spec, 0, n)
		for i := range n - 1 {
			specs = append(specs, route.Spec{Name: fmt.Sprint("r", i), Match: route.MatchSpec{Host: fmt.Sprintf("h%d.test", i), PathPrefix: fmt.Sprintf("/svc%d/", i)}})
		}
		specs = append(specs, route.Spec{Name: "bench", Match: route.MatchSpec{Host: "proxy.test", PathPrefix: "/"}})
		table, _, err := route.Compile(specs, map[string]*pool.Pool{route.DefaultPool: p}, map[string]*limits.Limit{"default": px.DefaultLimit()})
		if err != nil {
			b.Fatal(err)
		}
		px.SetRoutes(table)
	}
	proxyLn := serve(b, px.ServeHTTP)
	return &fasthttp.HostClient{Addr: "proxy.test", Dial: func(string) (net.Conn, error) { return proxyLn.Dial() }, MaxConns: 1024}
}

func run(b *testing.B, c *fasthttp.HostClient, path string, want int) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://proxy.test" + path)
		for pb.Next() {
			if err := c.Do(req, resp); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != want {
				b.Fatalf("status %d, want %d", resp.StatusCode(), want)
			}
		}
	})
}

func BenchmarkProxyEndToEnd(b *testing.B) {
	b.Run("NoLimiter", func(b *testing.B) { run(b, setup(b, nil), "/", 200) })
	b.Run("Limiter", func(b *testing.B) {
		lim := limiter.New(limiter.Config{Capacity: 1 << 40, RatePerSec: 1e9}, limiter.NewMemoryStore())
		run(b, setup(b, lim), "/", 200)
	})
	b.Run("Routes10", func(b *testing.B) {
		lim := limiter.New(limiter.Config{Capacity: 1 << 40, RatePerSec: 1e9}, limiter.NewMemoryStore())
		run(b, setupRoutes(b, lim, 10), "/v1/users", 200)
	})
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("Limits%d", n), func(b *testing.B) { run(b, setupLimits(b, n), "/v1/users", 200) })
	}
	b.Run("Limited429", func(b *testing.B) {
		lim := limiter.New(limiter.Config{Capacity: 1, RatePerSec: 0.001}, limiter.NewMemoryStore())
		c := setup(b, lim)
		code, _, _ := c.Get(nil, "http://proxy.test/") // spend the only token
		if code != 200 {
			b.Fatal(code)
		}
		run(b, c, "/", 429)
	})
}

func BenchmarkAdminGet(b *testing.B) {
	lim := limiter.New(limiter.Config{Capacity: 100, RatePerSec: 100}, limiter.NewMemoryStore())
	lim.Allow([]byte("10.0.0.1"), time.Now().UnixNano())
	be, _ := pool.NewBackend("http://backend.test:80", upstream.Options{})
	p := pool.New([]*pool.Backend{be}, &pool.RoundRobin{})
	px := proxy.New(proxy.Config{}, p, lim, proxy.ClientKey{}, zerolog.Nop())
	api := admin.New(admin.Config{DefaultLimit: 10, RatePerSec: 100}, lim, p, metrics.New(metrics.Sources{Proxy: px, Pool: p, Limiter: lim}), zerolog.Nop())
	ln := serve(b, api.Handler())
	c := &fasthttp.HostClient{Addr: "admin.test", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	run(b, c, "/buckets/10.0.0.1", 200)
}

// setupLimits is a proxy whose one route charges n limits: the limit
// default and n-1 named ones keyed by address and by a header (absent
// here, so keyed by address), as a route with a per-second, a per-minute
// and a per-day limit is.
func setupLimits(b *testing.B, n int) *fasthttp.HostClient {
	body := []byte("hello from the backend\n")
	backendLn := serve(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) })
	be, err := pool.NewBackend("http://backend.test:80", upstream.Options{MaxConns: 1024})
	if err != nil {
		b.Fatal(err)
	}
	be.HTTP.Dial = func(string) (net.Conn, error) { return backendLn.Dial() }
	p := pool.New([]*pool.Backend{be}, &pool.RoundRobin{})
	key, _ := proxy.ParseClientKey("ip", nil, 128)
	lim := limiter.New(limiter.Config{Capacity: 1 << 40, RatePerSec: 1e9}, limiter.NewMemoryStore())
	px := proxy.New(proxy.Config{BackendTimeout: 5 * time.Second}, p, lim, key, zerolog.Nop())
	lims := map[string]*limits.Limit{"default": px.DefaultLimit()}
	names := []string{"default"}
	for i := 1; i < n; i++ {
		k, _ := limits.ParseKey([]string{"ip", "header:X-Api-Key", "ip+header:X-Api-Key"}[i%3])
		name := fmt.Sprint("l", i)
		lims[name] = &limits.Limit{Name: name, Key: k, Capacity: 1 << 40, Rate: 1e9,
			Lim: limiter.New(limiter.Config{Capacity: 1 << 40, RatePerSec: 1e9}, limiter.NewMemoryStore())}
		names = append(names, name)
	}
	table, _, err := route.Compile([]route.Spec{{Name: "api", Match: route.MatchSpec{PathPrefix: "/v1/"}, Limits: names}},
		map[string]*pool.Pool{route.DefaultPool: p}, lims)
	if err != nil {
		b.Fatal(err)
	}
	px.SetRoutes(table)
	proxyLn := serve(b, px.ServeHTTP)
	return &fasthttp.HostClient{Addr: "proxy.test", Dial: func(string) (net.Conn, error) { return proxyLn.Dial() }, MaxConns: 1024}
}
