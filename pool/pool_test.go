package pool

import (
	"gopher-equalizer/upstream"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

func backends(t *testing.T, n int) []*Backend {
	t.Helper()
	var bs []*Backend
	for i := range n {
		b, err := NewBackend("http://127.0.0.1:"+string(rune('1'+i))+"000", upstream.Options{})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	return bs
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	for k := 1; k <= 5; k++ {
		for _, n := range []int{1, 7, 100, 1001} {
			bs := backends(t, k)
			p := New(bs, &RoundRobin{})
			counts := map[*Backend]int{}
			for range n {
				counts[p.Next(0)]++
			}
			for _, b := range bs {
				if c := counts[b]; c < n/k || c > n/k+1 {
					t.Errorf("k=%d n=%d: backend got %d", k, n, c)
				}
			}
		}
	}
}

func TestRandomReachesEveryBackend(t *testing.T) {
	bs := backends(t, 4)
	p := New(bs, Random{})
	counts := map[*Backend]int{}
	for range 4000 {
		counts[p.Next(0)]++
	}
	for i, b := range bs {
		// Expected 1000 each; 700 is more than 9 standard deviations away.
		if counts[b] < 700 {
			t.Errorf("backend %d picked %d times of 4000", i, counts[b])
		}
	}
}

func TestUnhealthyBackendsLeaveRotation(t *testing.T) {
	bs := backends(t, 3)
	p := New(bs, &RoundRobin{})
	p.SetHealthy(bs[1], false)
	for range 10 {
		if p.Next(0) == bs[1] {
			t.Fatal("unhealthy backend picked")
		}
	}
	p.SetHealthy(bs[0], false)
	p.SetHealthy(bs[2], false)
	if p.Next(0) != nil {
		t.Fatal("picked a backend when none is healthy")
	}
	p.SetHealthy(bs[2], true)
	if p.Next(0) != bs[2] {
		t.Fatal("recovered backend not picked")
	}
}

func TestNewBackendRejectsBadURLs(t *testing.T) {
	for _, bad := range []string{"", "localhost:8081", "ftp://x", "http://", "http://x:1/path", "http://x:1?q", "://x"} {
		if _, err := NewBackend(bad, upstream.Options{}); err == nil {
			t.Errorf("NewBackend(%q) accepted", bad)
		}
	}
	b, err := NewBackend("http://example.test", upstream.Options{})
	if err != nil || b.Addr != "example.test:80" {
		t.Errorf("default port: %v %v", b, err)
	}
	if _, err := NewStrategy("weighted"); err == nil {
		t.Errorf("unknown strategy accepted")
	}
}

// flaky serves 200 or 500 on demand, or stops listening.
type flaky struct {
	ln     net.Listener
	server *fasthttp.Server
	status atomic.Int64
}

func startFlaky(t *testing.T) *flaky {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{ln: ln}
	f.status.Store(200)
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/health" {
			ctx.SetStatusCode(404)
			return
		}
		ctx.SetStatusCode(int(f.status.Load()))
	}}
	f.server = s
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = s.Shutdown() })
	return f
}

func TestHealthCheckTakesBackendOutAndBack(t *testing.T) {
	up := startFlaky(t)
	other := startFlaky(t)
	a, _ := NewBackend("http://"+up.ln.Addr().String(), upstream.Options{})
	b, _ := NewBackend("http://"+other.ln.Addr().String(), upstream.Options{})
	p := New([]*Backend{a, b}, &RoundRobin{})
	c := NewChecker(p, HealthConfig{Interval: time.Hour, Timeout: 500 * time.Millisecond, Path: "/health"}, zerolog.Nop())

	c.CheckOnce()
	if len(p.Healthy()) != 2 {
		t.Fatalf("healthy = %d, want 2", len(p.Healthy()))
	}
	up.status.Store(503) // 5xx: down after the next probe
	c.CheckOnce()
	if h := p.Healthy(); len(h) != 1 || h[0] != b {
		t.Fatalf("after 503: healthy %v", h)
	}
	up.status.Store(302) // 2xx and 3xx count as healthy by default
	c.CheckOnce()
	if len(p.Healthy()) != 2 {
		t.Fatalf("after recovery: healthy %d", len(p.Healthy()))
	}
	_ = other.server.Shutdown() // stops answering at all
	c.CheckOnce()
	if h := p.Healthy(); len(h) != 1 || h[0] != a {
		t.Fatalf("after listener closed: healthy %v", h)
	}
}

func TestHealthRiseAndFall(t *testing.T) {
	f := startFlaky(t)
	a, _ := NewBackend("http://"+f.ln.Addr().String(), upstream.Options{})
	p := New([]*Backend{a}, &RoundRobin{})
	c := NewChecker(p, HealthConfig{Timeout: time.Second, Path: "/health", Fall: 2, Rise: 3}, zerolog.Nop())
	f.status.Store(500)
	c.CheckOnce()
	if !a.Healthy() {
		t.Fatal("down after one failure with fall=2")
	}
	c.CheckOnce()
	if a.Healthy() {
		t.Fatal("still up after two failures with fall=2")
	}
	f.status.Store(200)
	c.CheckOnce()
	c.CheckOnce()
	if a.Healthy() {
		t.Fatal("up after two successes with rise=3")
	}
	c.CheckOnce()
	if !a.Healthy() {
		t.Fatal("still down after three successes with rise=3")
	}
}

func BenchmarkPoolNext(b *testing.B) {
	bs := make([]*Backend, 3)
	for i := range bs {
		bs[i], _ = NewBackend("http://127.0.0.1:808"+string(rune('1'+i)), upstream.Options{})
	}
	for _, name := range StrategyNames() {
		s, _ := NewStrategy(name)
		p := New(bs, s)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if p.Next(0) == nil {
						b.Fatal("nil")
					}
				}
			})
		})
	}
}

func TestPassiveHealthAndRecoveryByProbe(t *testing.T) {
	f := startFlaky(t)
	a, _ := NewBackend("http://"+f.ln.Addr().String(), upstream.Options{})
	b := backends(t, 1)[0]
	p := New([]*Backend{a, b}, &RoundRobin{})
	p.PassiveFails = 3
	p.ConnectFailed(a)
	p.Connected(a) // a success in between starts the count again
	p.ConnectFailed(a)
	p.ConnectFailed(a)
	if !a.Healthy() {
		t.Fatal("taken out before 3 failures in a row")
	}
	if !p.ConnectFailed(a) || a.Healthy() || len(p.Healthy()) != 1 {
		t.Fatal("still in rotation after 3 failures in a row")
	}
	c := NewChecker(p, HealthConfig{Timeout: time.Second, Path: "/health"}, zerolog.Nop())
	c.CheckOnce() // a answers its probe: back in rotation
	if !a.Healthy() {
		t.Fatal("a good probe did not bring the backend back")
	}
	p.PassiveFails = 0
	for range 10 {
		p.ConnectFailed(a)
	}
	if !a.Healthy() {
		t.Fatal("PassiveFails=0 must turn passive health off")
	}
}
