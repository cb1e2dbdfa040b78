package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const limitsFile = `
backends: [%q]
bucket_capacity: 1000
bucket_refill_amount: 1000
trusted_proxies: [127.0.0.1/32]
limits:
  login:    {key: ip, capacity: 5, rate: 5/m}
  per-sec:  {key: "header:X-Api-Key", capacity: 10, rate: 10/s}
  per-day:  {key: "header:X-Api-Key", capacity: 12, rate: 12/d}
  new-rule: {key: "ip+cookie:session", capacity: 3, rate: 3/h, mode: shadow}
routes:
  - name: login
    match: {path: /login, methods: [POST]}
    limits: [login, default]
  - name: api
    match: {path_prefix: /api/}
    limits: [per-day, per-sec]
  - name: static
    match: {path_prefix: /static/}
    limits: []
  - name: shadowed
    match: {path_prefix: /try/}
    limits: [new-rule]
  - name: rest
    match: {}
exempt: [10.1.0.0/16]
`

// TestLimitsPerRoute: the login form at 5 per minute and the API keyed by
// its header on one file; two limits on one route (the stricter decides,
// the other is charged only by requests both admit); exempt behind a
// trusted proxy; shadow mode; the IETF fields and the problem body; the
// counters per limit.
func TestLimitsPerRoute(t *testing.T) {
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(limitsFile, okBackend(t)))
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})
	status := func(method, target string, headers ...string) int {
		t.Helper()
		s, _ := rawGet(t, in.proxy, method, target, "shop.test", headers...)
		return s
	}
	count := func(n int, method, target string, headers ...string) (ok, limited int) {
		t.Helper()
		for range n {
			switch s := status(method, target, headers...); s {
			case 200:
				ok++
			case 429:
				limited++
			default:
				t.Fatalf("%s %s: %d", method, target, s)
			}
		}
		return ok, limited
	}
	// /login: 5 per minute per address, then 429 naming the limit.
	if ok, limited := count(7, "POST", "/login"); ok != 5 || limited != 2 {
		t.Fatalf("POST /login: %d admitted, %d limited; want 5 and 2", ok, limited)
	}
	_, hdr, body := in.call(t, "POST", "/login", "Accept", "application/problem+json")
	if hdr.Get("RateLimit-Policy") != `"login";q=5;w=60` || !strings.HasPrefix(hdr.Get("RateLimit"), `"login";r=0;t=`) ||
		hdr.Get("Retry-After") == "" || !strings.HasPrefix(hdr.Get("Content-Type"), "application/problem+json") {
		t.Errorf("429 fields: %v", hdr)
	}
	var problem struct {
		Type     string   `json:"type"`
		Status   int      `json:"status"`
		Violated []string `json:"violated-policies"`
	}
	if err := json.Unmarshal([]byte(body), &problem); err != nil || problem.Status != 429 ||
		!strings.HasSuffix(problem.Type, "#quota-exceeded") || len(problem.Violated) != 1 || problem.Violated[0] != "login" {
		t.Errorf("problem body %q (%v)", body, err)
	}
	// The other routes of the same client are not touched by the login limit.
	if s := status("GET", "/other"); s != 200 {
		t.Fatalf("GET /other after the login limit: %d", s)
	}
	// Behind the trusted proxy, an exempt address is never charged.
	if ok, _ := count(8, "POST", "/login", "X-Forwarded-For", "10.1.2.3"); ok != 8 {
		t.Fatalf("exempt client: %d of 8 admitted", ok)
	}
	// Two limits: 10 at once per second, 12 per day. The 10 of the first
	// second, then 429 from per-sec, which must not charge per-day.
	if ok, limited := count(14, "GET", "/api/x", "X-Api-Key", "k1"); ok != 10 || limited != 4 {
		t.Fatalf("api: %d admitted, %d limited; want 10 and 4", ok, limited)
	}
	// per-day was charged first each time, and given its token back when
	// per-sec refused: 2 of its 12 are left. A second later per-sec has
	// refilled; per-day admits exactly 2, then refuses, naming itself.
	time.Sleep(1100 * time.Millisecond)
	if ok, limited := count(4, "GET", "/api/x", "X-Api-Key", "k1"); ok != 2 || limited != 2 {
		t.Fatalf("api a second later: %d admitted, %d limited; want 2 and 2 (per-day charged only for admitted requests)", ok, limited)
	}
	_, hdr, _ = in.get(t, "/api/x", "X-Api-Key", "k1")
	if !strings.HasPrefix(hdr.Get("RateLimit-Policy"), `"per-day";q=12;w=86400`) {
		t.Errorf("the api 429 should name per-day: %v", hdr)
	}
	var lims []struct {
		Name      string
		Capacity  int64
		Mode      string
		Buckets   int
		Decisions map[string]uint64
	}
	_, raw := in.adminCall(t, "GET", "/limits", "")
	if err := json.Unmarshal([]byte(raw), &lims); err != nil {
		t.Fatalf("/limits: %v %s", err, raw)
	}
	byName := map[string]int{}
	for i, l := range lims {
		byName[l.Name] = i
	}
	if len(lims) != 5 || lims[0].Name != "default" {
		t.Fatalf("/limits: %s", raw)
	}
	if d := lims[byName["per-day"]].Decisions; d["allowed"] != 12 || d["limited"] != 3 {
		t.Errorf("per-day: %v, want 12 allowed and 3 limited", d)
	}
	if d := lims[byName["per-sec"]].Decisions; d["allowed"] != 12 || d["limited"] != 4 {
		t.Errorf("per-sec: %v, want 12 allowed and 4 limited", d)
	}
	// Per key: another key has its own buckets.
	if ok, _ := count(3, "GET", "/api/x", "X-Api-Key", "k2"); ok != 3 {
		t.Fatalf("another key: %d of 3 admitted", ok)
	}
	// A request without the header is keyed by its address, not by one
	// shared empty key.
	if s := status("GET", "/api/x"); s != 200 {
		t.Fatalf("no key header: %d", s)
	}
	// Static is unlimited; shadow mode never refuses but counts.
	if ok, _ := count(20, "GET", "/static/a"); ok != 20 {
		t.Fatalf("static: %d of 20", ok)
	}
	if ok, _ := count(6, "GET", "/try/x", "Cookie", "session=abc"); ok != 6 {
		t.Fatalf("shadow: %d of 6 admitted", ok)
	}
	_, raw = in.adminCall(t, "GET", "/limits", "")
	json.Unmarshal([]byte(raw), &lims) //nolint:errcheck
	if d := lims[byName["new-rule"]].Decisions; d["would_limit"] != 3 || d["allowed"] != 3 {
		t.Errorf("new-rule (shadow): %v, want 3 allowed and 3 would_limit", d)
	}
	// The buckets of any limit, with the /buckets contract: the login
	// bucket of 127.0.0.1 is empty; an operator refills it.
	if code, body := in.adminCall(t, "GET", "/limits/login/buckets/127.0.0.1", ""); code != 200 || !contains(body, `"capacity":5,"tokens":0`) {
		t.Fatalf("GET /limits/login/buckets/127.0.0.1: %d %s", code, body)
	}
	if code, body := in.adminCall(t, "PATCH", "/limits/login/buckets/127.0.0.1", `{"tokens":2}`); code != 204 {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	if ok, limited := count(3, "POST", "/login"); ok != 2 || limited != 1 {
		t.Fatalf("after the PATCH: %d admitted, %d limited; want 2 and 1", ok, limited)
	}
	if code, body := in.adminCall(t, "POST", "/limits/per-day/buckets", `{"client_id":"h:vip","capacity":1000}`); code != 201 || !contains(body, `"rate_per_sec":0.000138`) {
		t.Fatalf("POST /limits/per-day/buckets: %d %s", code, body)
	}
	if code, _ := in.adminCall(t, "GET", "/limits/nope/buckets", ""); code != 404 {
		t.Fatalf("unknown limit: %d", code)
	}
	m, _ := in.scrape(t)
	if m[`equalizer_limit_decisions_total{limit="login",result="limited"}`] != 4 ||
		m[`equalizer_limit_decisions_total{limit="new-rule",result="would_limit"}`] != 3 {
		t.Errorf("decision metrics: login limited %v, new-rule would_limit %v",
			m[`equalizer_limit_decisions_total{limit="login",result="limited"}`], m[`equalizer_limit_decisions_total{limit="new-rule",result="would_limit"}`])
	}
	in.stop(t, syscall.SIGTERM)
}

// TestLimitMistakesStopStartUp: one line naming the place, exit code 2.
func TestLimitMistakesStopStartUp(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct{ body, want string }{
		{"limits:\n  a: {capacity: 5, rate: 5/fortnight}\n", `limits.a.rate: "5/fortnight"`},
		{"limits:\n  a: {capacity: 5, rate: 5/m, key: \"header:\"}\n", `limits.a.key`},
		{"limits:\n  a: {rate: 5/m}\n", `limits.a.capacity: missing`},
		{"limits:\n  a: {capacity: 5, rate: 5/m, mode: dry}\n", `limits.a.mode: want enforce or shadow`},
		{"limits:\n  a: {capacity: 5, rate: 5/m, burst: 3}\n", `limits.a.burst: unknown key`},
		{"routes:\n  - match: {}\n    limits: [apii]\n", `routes[0].limits[0]: no limit "apii"`},
		{"exempt: [10.0.0.0/33]\n", `exempt[0]`},
	} {
		file := filepath.Join(dir, fmt.Sprintf("l%d.yaml", i))
		writeFile(t, file, c.body)
		cmd := newCmd(t, map[string]string{"EQUALIZER_CONFIG_FILE": file, "EQUALIZER_LISTEN": freeAddr(t), "EQUALIZER_ADMIN_LISTEN": freeAddr(t)})
		out, _ := cmd.CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if code := cmd.ProcessState.ExitCode(); code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("%q: exit %d, output %q, want one line with %q", c.body, code, out, c.want)
		}
	}
}

// TestSIGHUPReloadsLimits: a reload that grows a limit moves its buckets
// to the new size keeping their tokens (as the default limit's do: an
// empty bucket stays empty, a new client gets the new capacity), adds a
// limit to a route, and exempts an address; an invalid limit changes
// nothing.
func TestSIGHUPReloadsLimits(t *testing.T) {
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	base := fmt.Sprintf("backends: [%q]\ntrusted_proxies: [127.0.0.1/32]\n", okBackend(t))
	writeFile(t, file, base+`limits:
  small: {capacity: 3, rate: 1/h}
routes:
  - {name: a, match: {}, limits: [small]}
`)
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})
	xff := func(addr string) []string { return []string{"X-Forwarded-For", addr} }
	send := func(n int, addr string) (ok int) {
		t.Helper()
		for range n {
			if s, _ := rawGet(t, in.proxy, "GET", "/", "shop.test", xff(addr)...); s == 200 {
				ok++
			}
		}
		return ok
	}
	if ok := send(4, "198.51.100.1"); ok != 3 {
		t.Fatalf("before the reload: %d of 4", ok)
	}
	hup := func(body string) {
		t.Helper()
		writeFile(t, file, body)
		in.cmd.Process.Signal(syscall.SIGHUP) //nolint:errcheck
	}
	// Capacity 3 -> 5; a second limit on the route; 198.51.100.9 exempt.
	hup(base + `limits:
  small: {capacity: 5, rate: 1/h}
  other: {capacity: 100, rate: 100/s}
routes:
  - {name: a, match: {}, limits: [small, other]}
exempt: [198.51.100.9]
`)
	waitFor(t, "the reload", func() bool { _, body := in.adminCall(t, "GET", "/limits", ""); return contains(body, `"name":"other"`) })
	if ok := send(3, "198.51.100.1"); ok != 0 {
		t.Fatalf("after growing the limit: %d of 3, want 0 (the empty bucket keeps its tokens)", ok)
	}
	if ok := send(6, "198.51.100.2"); ok != 5 {
		t.Fatalf("a new client after growing the limit: %d of 6, want 5", ok)
	}
	if ok := send(10, "198.51.100.9"); ok != 10 {
		t.Fatalf("exempt address: %d of 10", ok)
	}
	// An invalid file: logged, nothing changes.
	hup(base + "limits:\n  small: {capacity: 5, rate: 1/fortnight}\nroutes:\n  - {match: {}, limits: [small]}\n")
	waitFor(t, "the refusal", func() bool { return contains(in.log(), "configuration reload rejected") })
	if ok := send(10, "198.51.100.9"); ok != 10 {
		t.Fatalf("exempt address after a rejected reload: %d of 10", ok)
	}
	in.stop(t, syscall.SIGTERM)
}

// TestConcurrencyLimit: at most 2 requests of one address in flight,
// counted until the response body ends (a stream), until the client goes
// (a disconnect mid-stream), and until a tunnel closes; the count returns
// to 0 every time.
func TestConcurrencyLimit(t *testing.T) {
	release := make(chan struct{})
	slow := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			io.WriteString(w, "fast") //nolint:errcheck
			return
		}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			io.WriteString(w, "chunk\n") //nolint:errcheck
			w.(http.Flusher).Flush()
			select {
			case <-release:
				return
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	}))
	echo := startRawUpgradeBackend(t)
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(`backends: [%q]
pools:
  tunnels: {backends: [%q]}
limits:
  inflight: {key: ip, concurrency: 2}
routes:
  - {name: echo, match: {path: /echo}, pool: tunnels, limits: [inflight]}
  - {name: rest, match: {}, limits: [inflight]}
`, slow, echo))
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})
	inFlight := func() int64 {
		t.Helper()
		var lims []struct {
			Name     string
			InFlight int64 `json:"in_flight"`
		}
		_, raw := in.adminCall(t, "GET", "/limits", "")
		json.Unmarshal([]byte(raw), &lims) //nolint:errcheck
		for _, l := range lims {
			if l.Name == "inflight" {
				return l.InFlight
			}
		}
		t.Fatalf("no inflight limit: %s", raw)
		return -1
	}
	open := func(target string, extra string) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", in.proxy)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: shop.test\r\n"+extra+"\r\n") //nolint:errcheck
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || !strings.Contains(line, " 200 ") && !strings.Contains(line, " 101 ") {
			t.Fatalf("%s: %q %v", target, line, err)
		}
		return c, br
	}
	a, _ := open("/slow", "Connection: close\r\n")
	b, brB := open("/slow", "Connection: close\r\n")
	if got := inFlight(); got != 2 {
		t.Fatalf("two streams: %d in flight", got)
	}
	if s, _ := rawGet(t, in.proxy, "GET", "/fast", "shop.test"); s != 429 {
		t.Fatalf("a third request: %d, want 429", s)
	}
	a.Close() // gone mid-stream
	waitFor(t, "the disconnected stream's count", func() bool { return inFlight() == 1 })
	close(release)
	io.ReadAll(brB) //nolint:errcheck // to the end of the body, then the server's close
	b.Close()
	waitFor(t, "the finished stream's count", func() bool { return inFlight() == 0 })
	if s, _ := rawGet(t, in.proxy, "GET", "/fast", "shop.test"); s != 200 {
		t.Fatalf("after the streams: %d", s)
	}
	// A tunnel counts until it closes.
	tun, br := open("/echo", "Connection: Upgrade\r\nUpgrade: echo-proto\r\n")
	for line, _ := br.ReadString('\n'); line != "\r\n" && line != ""; line, _ = br.ReadString('\n') {
	}
	if got := inFlight(); got != 1 {
		t.Fatalf("an open tunnel: %d in flight", got)
	}
	tun.Close()
	waitFor(t, "the closed tunnel's count", func() bool { return inFlight() == 0 })
	_, raw := in.adminCall(t, "GET", "/limits", "")
	if !contains(raw, `"name":"inflight","key":"ip","mode":"enforce","concurrency":2,"in_flight":0`) || !contains(raw, `"decisions":{"allowed":4,"delayed":0,"limited":1,"would_limit":0}`) {
		t.Errorf("/limits: %s", raw)
	}
	if code := in.stop(t, syscall.SIGTERM); code != 0 { // the binary is built with -race
		t.Fatalf("exit code %d:\n%s", code, in.log())
	}
}

// TestDelayMatchesNginx plays one trace against nginx (limit_req rate=10r/s
// burst=5 delay=2) and against the same limit here (capacity 3 = delay+1,
// rate 10/s, delay 300ms = (burst-delay)/rate): 10 requests at once, then
// 4 more a second later, each on its own connection. Both must serve,
// delay and refuse the same numbers of requests.
func TestDelayMatchesNginx(t *testing.T) {
	backend := okBackend(t)
	ngx := freeAddr(t)
	startNginx(t, ngx, fmt.Sprintf(`
  limit_req_zone $binary_remote_addr zone=z:1m rate=10r/s;
  server {
    listen %s;
    location / {
      limit_req zone=z burst=5 delay=2;
      limit_req_status 429;
      proxy_pass %s;
    }
  }`, ngx, backend))
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(`backends: [%q]
limits:
  z: {key: ip, capacity: 3, rate: 10/s, delay: 300ms}
routes:
  - {match: {}, limits: [z]}
`, backend))
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})

	// trace sends bursts of requests at once and sorts the answers into
	// served at once, delayed (50 ms or more) and refused.
	trace := func(addr string) string {
		var out []string
		for _, burst := range []int{10, 4} {
			type result struct {
				status int
				took   time.Duration
			}
			results := make(chan result, burst)
			start := time.Now()
			for range burst {
				go func() {
					s, _ := rawGet(t, addr, "GET", "/", "shop.test")
					results <- result{s, time.Since(start)}
				}()
			}
			now, delayed, refused := 0, 0, 0
			for range burst {
				r := <-results
				switch {
				case r.status == 429:
					refused++
				case r.status == 200 && r.took >= 50*time.Millisecond:
					delayed++
				case r.status == 200:
					now++
				default:
					t.Errorf("%s: status %d", addr, r.status)
				}
			}
			out = append(out, fmt.Sprintf("%d at once, %d delayed, %d refused", now, delayed, refused))
			time.Sleep(time.Until(start.Add(time.Second)))
		}
		return strings.Join(out, "; ")
	}
	nginx := trace(ngx)
	ours := trace(in.proxy)
	t.Logf("nginx:     %s", nginx)
	t.Logf("equalizer: %s", ours)
	if nginx != ours {
		t.Fatalf("the same trace: nginx %q, equalizer %q", nginx, ours)
	}
	m, _ := in.scrape(t)
	if m[`equalizer_limit_decisions_total{limit="z",result="delayed"}`] != 4 || m["equalizer_limit_delay_seconds_count"] != 4 {
		t.Errorf("delayed %v, delay histogram count %v, want 4 and 4",
			m[`equalizer_limit_decisions_total{limit="z",result="delayed"}`], m["equalizer_limit_delay_seconds_count"])
	}
	in.stop(t, syscall.SIGTERM)
}

// TestDelayedClientThatLeavesIsNotCharged: a request waiting 500 ms for
// its token whose client disconnects after 100 ms gives the token back:
// the next request, at 600 ms, finds a token and goes at once.
func TestDelayedClientThatLeavesIsNotCharged(t *testing.T) {
	in := startDelayed(t)
	start := time.Now()
	if s, _ := rawGet(t, in.proxy, "GET", "/", "shop.test"); s != 200 {
		t.Fatalf("first: %d", s)
	}
	c, err := net.Dial("tcp", in.proxy)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n") //nolint:errcheck
	time.Sleep(100 * time.Millisecond)
	var lims []struct{ Waiting int64 }
	_, raw := in.adminCall(t, "GET", "/limits", "")
	json.Unmarshal([]byte(raw), &lims) //nolint:errcheck
	if len(lims) < 2 || lims[1].Waiting != 1 {
		t.Fatalf("one request should be waiting: %s", raw)
	}
	c.Close()
	time.Sleep(time.Until(start.Add(600 * time.Millisecond)))
	t0 := time.Now()
	if s, _ := rawGet(t, in.proxy, "GET", "/", "shop.test"); s != 200 || time.Since(t0) > 50*time.Millisecond {
		t.Fatalf("after the waiting client left: %d in %v, want 200 at once (its token was given back)", s, time.Since(t0))
	}
	waitFor(t, "the waiting count", func() bool {
		var now []struct{ Waiting int64 }
		_, raw := in.adminCall(t, "GET", "/limits", "")
		json.Unmarshal([]byte(raw), &now) //nolint:errcheck
		return len(now) == 2 && now[1].Waiting == 0
	})
	if m, _ := in.scrape(t); m[`equalizer_requests_total{outcome="client_gone"}`] != 1 {
		t.Errorf("client_gone: %v, want 1", m[`equalizer_requests_total{outcome="client_gone"}`])
	}
	in.stop(t, syscall.SIGTERM)
}

// startDelayed runs an instance whose one limit admits one request at
// once and delays the next ones up to 2 s, a token every 500 ms.
func startDelayed(t *testing.T) *instance {
	t.Helper()
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(`backends: [%q]
limits:
  z: {key: ip, capacity: 1, rate: 2/s, delay: 2s}
routes:
  - {match: {}, limits: [z]}
`, okBackend(t)))
	return startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})
}

// TestNamedLimitsInPostgres: a named limit's buckets are rows of their own
// (limit_name, client_id): two instances share them, an admin change
// through /limits/{name}/buckets on one reaches the other, and a restart
// keeps them; the limit default's row of the same key is another row.
func TestNamedLimitsInPostgres(t *testing.T) {
	_, env, _ := startShared(t, 0, "100", "100")
	dbURL := env["EQUALIZER_DATABASE_URL"]
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, `limits:
  api: {key: "header:X-Api-Key", capacity: 20, rate: 1/h}
routes:
  - {name: api, match: {path_prefix: /api/}, limits: [api, default]}
  - {name: rest, match: {}}
`)
	env["EQUALIZER_CONFIG_FILE"] = file
	env["EQUALIZER_SYNC_INTERVAL"] = "100ms"
	a, b := startInstanceOf(t, plainBinary(t), env), startInstanceOf(t, plainBinary(t), env)
	send := func(in *instance, n int) (ok int) {
		t.Helper()
		for range n {
			if s, _ := rawGet(t, in.proxy, "GET", "/api/x", "shop.test", "X-Api-Key", "k1"); s == 200 {
				ok++
			}
		}
		return ok
	}
	// B meets the key first (a key new to an instance starts full there:
	// what two cold instances admit together is owed, see Durability).
	total := send(b, 1)
	time.Sleep(500 * time.Millisecond) // a sync on each side, and the feed
	total += send(a, 11)
	time.Sleep(500 * time.Millisecond)
	total += send(b, 12)
	time.Sleep(500 * time.Millisecond)
	total += send(a, 5)
	if total != 20 {
		t.Fatalf("two instances admitted %d for the shared capacity 20", total)
	}
	var tokens float64
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT tokens FROM token_buckets WHERE limit_name = 'api' AND client_id = 'h:k1'`).Scan(&tokens); err != nil || tokens > 0.01 {
		t.Fatalf("the api row: %v tokens (%v)", tokens, err)
	}
	// An operator refills the key on A; B sees it within a second.
	if code, body := a.adminCall(t, "PATCH", "/limits/api/buckets/h:k1", `{"tokens":3}`); code != 204 {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	waitFor(t, "the PATCH on B", func() bool {
		_, body := b.adminCall(t, "GET", "/limits/api/buckets/h:k1", "")
		return contains(body, `"tokens":3`)
	})
	if ok := send(b, 2); ok != 2 {
		t.Fatalf("after the PATCH: %d of 2", ok)
	}
	// A restart of B keeps the state: one token left.
	if code := b.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b = startInstanceOf(t, plainBinary(t), env)
	if ok := send(b, 3); ok != 1 {
		t.Fatalf("after a restart: %d of 3, want 1", ok)
	}
	a.stop(t, syscall.SIGTERM)
	b.stop(t, syscall.SIGTERM)
}

// TestThreeInstancesShareANamedLimit: the cold key of TestColdKeyOnSeveralInstances
// on a route's named limit: capacity 50 and 10/s keyed by a header, 1,000
// requests/s round robin over 3 instances for 20 s: 250 +- 5 %.
func TestThreeInstancesShareANamedLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 20 s")
	}
	_, env, _ := startShared(t, 0, "1000000", "1000000")
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, `limits:
  per-route: {key: "header:X-Client", capacity: 50, rate: 10/s}
routes:
  - {name: api, match: {path_prefix: /api/}, limits: [per-route, default]}
`)
	env["EQUALIZER_CONFIG_FILE"] = file
	var ins []*instance
	for range 3 {
		ins = append(ins, startInstanceOf(t, plainBinary(t), env))
	}
	got, want := driveOneKey(t, ins, "/api/x")
	t.Logf("3 instances, a named limit: admitted %.0f, ideal %.0f (%+.1f%%)", got, want, 100*(got-want)/want)
	if math.Abs(got-want) > 0.05*want {
		t.Fatalf("admitted %.0f, want %.0f +- 5%%", got, want)
	}
}
