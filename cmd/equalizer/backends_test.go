package main

import (
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// countingBackend serves with a delay and counts requests, health probes
// (/health) aside.
func countingBackend(t *testing.T, delay time.Duration) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/health" {
			return
		}
		n.Add(1)
		time.Sleep(delay)
		ctx.SetBodyString("ok")
	}}
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = s.Shutdown() })
	return ln.Addr().String(), &n
}

// TestBackendsAPIAddDrainRemove: a backend added through the API gets
// traffic; a drained one gets no new request while its request in flight
// finishes, and is then removed.
func TestBackendsAPIAddDrainRemove(t *testing.T) {
	fast, fastN := countingBackend(t, 0)
	slow, slowN := countingBackend(t, time.Second)
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":        "http://" + fast + ",http://" + slow,
		"EQUALIZER_HEALTH_INTERVAL": "1h",
		"EQUALIZER_HEALTH_PATH":     "/health",
		"EQUALIZER_RATE_LIMIT":      "false",
	})
	// Round robin: the first request goes to fast, the second to slow.
	if code, _, _ := in.get(t, "/"); code != 200 {
		t.Fatal(code)
	}
	var wg sync.WaitGroup
	var slowCode atomic.Int64
	wg.Go(func() { code, _, _ := in.get(t, "/"); slowCode.Store(int64(code)) })
	waitFor(t, "a request in flight on the slow backend", func() bool { return slowN.Load() == 1 })

	code, body := in.adminCall(t, "DELETE", "/backends/"+slow, "")
	if code != 202 || !contains(body, `"state":"draining"`) || !contains(body, `"in_flight":1`) {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	for range 20 {
		if code, _, _ := in.get(t, "/"); code != 200 {
			t.Fatalf("a request during the drain: %d", code)
		}
	}
	if slowN.Load() != 1 {
		t.Fatalf("the draining backend got %d new requests", slowN.Load()-1)
	}
	wg.Wait()
	if slowCode.Load() != 200 {
		t.Fatalf("the request in flight on the drained backend ended %d", slowCode.Load())
	}
	waitFor(t, "the drained backend to be removed", func() bool {
		_, body := in.adminCall(t, "GET", "/backends", "")
		var list []struct{ ID string }
		json.Unmarshal([]byte(body), &list) //nolint:errcheck
		return len(list) == 1 && list[0].ID == fast
	})

	// Add a third backend with weight 3: it takes 3 of every 4 requests.
	third, thirdN := countingBackend(t, 0)
	if code, body := in.adminCall(t, "POST", "/backends", `{"url":"http://`+third+`","weight":3}`); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	if code, _ := in.adminCall(t, "POST", "/backends", `{"url":"http://`+third+`"}`); code != 409 {
		t.Fatalf("POST of a backend already there: %d", code)
	}
	before := fastN.Load()
	for range 40 {
		in.get(t, "/")
	}
	if got := thirdN.Load(); got != 30 || fastN.Load()-before != 10 {
		t.Fatalf("weights 3 and 1: %d and %d of 40", got, fastN.Load()-before)
	}
	// Weight change and keep-drained, then back.
	if code, body := in.adminCall(t, "PATCH", "/backends/"+third, `{"weight":1,"state":"drained"}`); code != 204 {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	waitFor(t, "drained", func() bool {
		_, b := in.adminCall(t, "GET", "/backends/"+third, "")
		return contains(b, `"state":"drained"`)
	})
	n := thirdN.Load()
	for range 10 {
		in.get(t, "/")
	}
	if thirdN.Load() != n {
		t.Fatal("a drained backend got requests")
	}
	if code, _ := in.adminCall(t, "PATCH", "/backends/"+third, `{"state":"active"}`); code != 204 {
		t.Fatal("PATCH active")
	}
	for range 10 {
		in.get(t, "/")
	}
	if thirdN.Load() != n+5 {
		t.Fatalf("back with weight 1: %d of 10", thirdN.Load()-n)
	}
	for _, c := range []struct {
		method, path, body string
		code               int
	}{
		{"POST", "/backends", `{"url":"ftp://x:1"}`, 400},
		{"POST", "/backends", `{"url":"http://127.0.0.1:99999"}`, 400},
		{"POST", "/backends", `{"url":"http://127.0.0.1:1","weight":0}`, 400},
		{"POST", "/backends", `{"url":"http://127.0.0.1:1","Weight":2}`, 400},
		{"PATCH", "/backends/" + third, `{"state":"gone"}`, 400},
		{"PATCH", "/backends/" + third, `{}`, 400},
		{"GET", "/backends/10.9.9.9:1", "", 404},
		{"DELETE", "/backends/10.9.9.9:1", "", 404},
	} {
		if code, body := in.adminCall(t, c.method, c.path, c.body); code != c.code {
			t.Errorf("%s %s %s: %d %s, want %d", c.method, c.path, c.body, code, body, c.code)
		}
	}
	in.stop(t, syscall.SIGTERM)
}

// TestBackendChangesReachEveryInstance: with PostgreSQL, a backend added,
// changed or deleted through one instance's API is seen by the others
// within a second, and survives their restarts.
func TestBackendChangesReachEveryInstance(t *testing.T) {
	x, _ := countingBackend(t, 0)
	y, _ := countingBackend(t, 0)
	_, env, ins := startShared(t, 2, "100", "100")
	env["EQUALIZER_BACKENDS"] = "http://" + x
	// startShared's instances use another backend: restart both on x.
	for i := range ins {
		ins[i].stop(t, syscall.SIGTERM)
		ins[i] = startInstanceOf(t, plainBinary(t), env)
	}
	a, b := ins[0], ins[1]
	seen := func(what string, in *instance, cond func(body string) bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
			_, body := in.adminCall(t, "GET", "/backends", "")
			if cond(body) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not seen within 1 s: %s", what, body)
			}
		}
	}
	if code, body := a.adminCall(t, "POST", "/backends", `{"url":"http://`+y+`"}`); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	seen("the added backend", b, func(body string) bool { return contains(body, `"id":"`+y+`"`) })
	if code, body := b.adminCall(t, "PATCH", "/backends/"+y, `{"weight":3}`); code != 204 {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	seen("the new weight", a, func(body string) bool { return contains(body, `"id":"`+y+`","url":"http://`+y+`","weight":3`) })
	a.stop(t, syscall.SIGTERM)
	a = startInstanceOf(t, plainBinary(t), env)
	seen("the stored backend after a restart", a, func(body string) bool { return contains(body, `"id":"`+y+`","url":"http://`+y+`","weight":3`) })
	if code, _ := a.adminCall(t, "DELETE", "/backends/"+y, ""); code != 202 {
		t.Fatal("DELETE")
	}
	seen("the removal", b, func(body string) bool { return !contains(body, y) })
	b.stop(t, syscall.SIGTERM)
	b = startInstanceOf(t, plainBinary(t), env)
	if _, body := b.adminCall(t, "GET", "/backends", ""); contains(body, y) || !contains(body, x) {
		t.Fatalf("after a restart: %s", body)
	}
	a.stop(t, syscall.SIGTERM)
	b.stop(t, syscall.SIGTERM)
}
