package proxy

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestSlowBackendLosesTraffic: of two backends, one answers 10 times slower
// (200 ms against 20 ms). Round robin still gives it half the requests;
// least_conn and p2c must give it under a quarter of that half.
func TestSlowBackendLosesTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 10 s")
	}
	// Long delays and 16 clients keep the test's own CPU low: on a busy
	// machine a starved "fast" backend is not 10 times faster any more.
	delay := func(d time.Duration) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { time.Sleep(d); ctx.SetBodyString("ok") }}
		go s.Serve(ln) //nolint:errcheck
		t.Cleanup(func() { _ = s.Shutdown() })
		return "http://" + ln.Addr().String()
	}
	fast, slow := delay(20*time.Millisecond), delay(200*time.Millisecond)
	for _, strategy := range []string{"round_robin", "least_conn", "p2c"} {
		// Enough connections that no request waits for one: a wait
		// counts as in flight and would blur what least_conn sees.
		h := startProxy(t, options{strategy: strategy, maxConns: 512}, fast, slow)
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
		var wg sync.WaitGroup
		stop := time.Now().Add(3 * time.Second)
		for range 16 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					resp, err := client.Get("http://" + h.addr + "/")
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
				}
			})
		}
		// Count from 0.5 s on: the first requests find both idle.
		bs := h.pool.Backends()
		time.Sleep(500 * time.Millisecond)
		f0, s0 := bs[0].Stats.Requests(), bs[1].Stats.Requests()
		var sumF, sumS, samples int64
		for time.Now().Before(stop) {
			sumF += bs[0].InFlight()
			sumS += bs[1].InFlight()
			samples++
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("%s: mean in flight: fast %.1f, slow %.1f", strategy, float64(sumF)/float64(samples), float64(sumS)/float64(samples))
		wg.Wait()
		f, s := float64(bs[0].Stats.Requests()-f0), float64(bs[1].Stats.Requests()-s0)
		got := s / (f + s)
		t.Logf("%s: slow backend got %.3f of %0.f requests", strategy, got, f+s)
		switch {
		case strategy == "round_robin" && got < 0.45:
			t.Fatalf("round robin gave the slow backend %.3f, want about 0.5: the setup is wrong", got)
		case strategy != "round_robin" && got >= 0.125:
			t.Fatalf("%s gave the slow backend %.3f of the requests, want under 0.125 (a quarter of its even share)", strategy, got)
		}
	}
}

// TestHashSticksClientsWithoutALimiter: the hash strategy needs the client
// key even when limiting is off.
func TestHashSticksClientsWithoutALimiter(t *testing.T) {
	var urls []string
	var gots []chan seen
	for range 3 {
		u, got := startBackend(t, nil)
		urls, gots = append(urls, u), append(gots, got)
	}
	h := startProxy(t, options{strategy: "hash", key: "header:X-Client"}, urls...)
	for _, client := range []string{"alice", "bob", "carol", "dave"} {
		first := -1
		for range 5 {
			if resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Client: "+client+"\r\n\r\n"); resp.StatusCode != 200 {
				t.Fatalf("%d", resp.StatusCode)
			}
			seenBy := -1
			for i, got := range gots {
				select {
				case <-got:
					seenBy = i
				default:
				}
			}
			switch {
			case seenBy == -1:
				t.Fatalf("%s: no backend recorded the request", client)
			case first == -1:
				first = seenBy
			case seenBy != first:
				t.Fatalf("%s went to backend %d, then %d", client, first, seenBy)
			}
		}
	}
}
