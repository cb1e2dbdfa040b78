package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// scrape reads /metrics into name{labels} -> value.
func (in *instance) scrape(t *testing.T) (map[string]float64, string) {
	t.Helper()
	code, body := in.adminCall(t, "GET", "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		m[line[:i]] = v
	}
	return m, body
}

// rawRequest sends bytes on a new connection and returns the status of the
// answer (0 when the connection closed without one).
func rawRequest(t *testing.T, addr, req string, wait time.Duration) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait)) //nolint:errcheck
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0
	}
	code, _ := strconv.Atoi(f[1])
	return code
}

// TestMetricsCountEveryOutcomeOnce sends one request of each outcome to the
// real binary and checks that exactly its counters moved by one, that the
// latency histogram counts the forwarded requests, and that promtool
// accepts the exposition.
func TestMetricsCountEveryOutcomeOnce(t *testing.T) {
	tool := requireTool(t, "promtool") // Debian package prometheus
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/slow":
			time.Sleep(1500 * time.Millisecond)
		case "/garbage":
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(c net.Conn) { c.Write([]byte("NOT HTTP AT ALL\r\n\r\n")) }) //nolint:errcheck
			return
		}
		ctx.SetBodyString("ok")
	})
	b := `backend="` + backend + `"`
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":               backend,
		"EQUALIZER_CLIENT_KEY":             "header:X-Client",
		"EQUALIZER_BUCKET_CAPACITY":        "1",
		"EQUALIZER_BUCKET_REFILL_AMOUNT":   "1",
		"EQUALIZER_BUCKET_REFILL_INTERVAL": "1h",
		"EQUALIZER_BACKEND_TIMEOUT":        "500ms",
		"EQUALIZER_READ_TIMEOUT":           "1s",
		"EQUALIZER_MAX_BODY_SIZE":          "10",
		"EQUALIZER_MAX_HEADER_SIZE":        "4096",
		"EQUALIZER_HEALTH_INTERVAL":        "1h",
	})
	key := 0
	get := func(path string) int {
		key++
		code, _, _ := in.get(t, path, "X-Client", fmt.Sprintf("c%d", key))
		return code
	}
	cases := []struct {
		name   string
		send   func() int
		status int
		moved  []string // series that must move by exactly one
	}{
		{"forwarded", func() int { return get("/") }, 200, []string{
			`equalizer_requests_total{outcome="forwarded"}`, `equalizer_backend_requests_total{` + b + `}`,
			`equalizer_backend_responses_total{` + b + `,code="2xx"}`, `equalizer_backend_response_seconds_count{` + b + `}`,
			`equalizer_limiter_decisions_total{decision="admitted"}`}},
		{"limited", func() int { get("/"); key--; return get("/") }, 429, []string{
			// the first request of the pair is forwarded
			`equalizer_requests_total{outcome="forwarded"}`, `equalizer_backend_requests_total{` + b + `}`,
			`equalizer_backend_responses_total{` + b + `,code="2xx"}`, `equalizer_backend_response_seconds_count{` + b + `}`,
			`equalizer_limiter_decisions_total{decision="admitted"}`,
			`equalizer_requests_total{outcome="limited"}`, `equalizer_limiter_decisions_total{decision="limited"}`}},
		{"bad header name", func() int {
			return rawRequest(t, in.proxy, "GET / HTTP/1.1\r\nHost: h\r\nX A: 1\r\n\r\n", 5*time.Second)
		}, 400, []string{`equalizer_requests_total{outcome="bad_request"}`}},
		{"unparsable head", func() int {
			return rawRequest(t, in.proxy, "GARBAGE\r\n\r\n", 5*time.Second)
		}, 400, []string{`equalizer_requests_total{outcome="bad_request"}`}},
		{"slow head", func() int {
			return rawRequest(t, in.proxy, "GET / HTTP/1.1\r\nHost: h\r\n", 5*time.Second)
		}, 408, []string{`equalizer_requests_total{outcome="request_timeout"}`}},
		{"body too large", func() int {
			return rawRequest(t, in.proxy, "POST / HTTP/1.1\r\nHost: h\r\nX-Client: big\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("b", 100), 5*time.Second)
		}, 413, []string{`equalizer_requests_total{outcome="body_too_large"}`, `equalizer_limiter_decisions_total{decision="admitted"}`}},
		{"header too large", func() int {
			return rawRequest(t, in.proxy, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: "+strings.Repeat("a", 8000)+"\r\n\r\n", 5*time.Second)
		}, 431, []string{`equalizer_requests_total{outcome="header_too_large"}`}},
		{"bad gateway", func() int { return get("/garbage") }, 502, []string{
			`equalizer_requests_total{outcome="bad_gateway"}`, `equalizer_backend_requests_total{` + b + `}`,
			`equalizer_backend_failures_total{` + b + `,reason="malformed"}`, `equalizer_limiter_decisions_total{decision="admitted"}`}},
		{"gateway timeout", func() int { return get("/slow") }, 504, []string{
			`equalizer_requests_total{outcome="gateway_timeout"}`, `equalizer_backend_requests_total{` + b + `}`,
			`equalizer_backend_failures_total{` + b + `,reason="timeout"}`, `equalizer_limiter_decisions_total{decision="admitted"}`}},
	}
	before, _ := in.scrape(t)
	for _, c := range cases {
		if got := c.send(); got != c.status {
			t.Fatalf("%s: status %d, want %d", c.name, got, c.status)
		}
		after, _ := in.scrape(t)
		want := map[string]float64{}
		for _, s := range c.moved {
			want[s]++
			// The limit default's decisions move with the limiter's.
			switch s {
			case `equalizer_limiter_decisions_total{decision="admitted"}`:
				want[`equalizer_limit_decisions_total{limit="default",result="allowed"}`]++
			case `equalizer_limiter_decisions_total{decision="limited"}`:
				want[`equalizer_limit_decisions_total{limit="default",result="limited"}`]++
			}
			// A request that reached routing counts for its route too.
			if o, ok := strings.CutPrefix(s, `equalizer_requests_total{outcome="`); ok {
				o = strings.TrimSuffix(o, `"}`)
				if o != "bad_request" && o != "request_timeout" && o != "header_too_large" {
					want[`equalizer_route_requests_total{outcome="`+o+`",route="default"}`]++
				}
			}
		}
		for s, v := range after {
			if strings.HasPrefix(s, "go_") || strings.HasPrefix(s, "process_") || strings.Contains(s, "_bucket{") ||
				strings.HasSuffix(s, "_sum{"+b+"}") || strings.HasPrefix(s, "equalizer_open_connections") ||
				strings.HasPrefix(s, "equalizer_limiter_buckets") || strings.HasPrefix(s, "equalizer_backend_in_flight") {
				continue
			}
			if d := v - before[s]; d != want[s] {
				t.Errorf("%s: %s moved by %v, want %v", c.name, s, d, want[s])
			}
		}
		for s := range want {
			if _, ok := after[s]; !ok {
				t.Errorf("%s: %s missing from /metrics", c.name, s)
			}
		}
		before = after
	}
	final, body := in.scrape(t)
	if final[`equalizer_backend_response_seconds_count{`+b+`}`] != final[`equalizer_requests_total{outcome="forwarded"}`] {
		t.Errorf("histogram count %v != forwarded %v", final[`equalizer_backend_response_seconds_count{`+b+`}`], final[`equalizer_requests_total{outcome="forwarded"}`])
	}
	for _, family := range []string{"equalizer_requests_total", "equalizer_backend_response_seconds", "go_goroutines", "process_resident_memory_bytes"} {
		if !regexp.MustCompile(`(?m)^# HELP `+family+` \S`).MatchString(body) || !strings.Contains(body, "# TYPE "+family+" ") {
			t.Errorf("%s lacks HELP or TYPE", family)
		}
	}
	cmd := exec.Command(tool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	in.stop(t, syscall.SIGTERM)
}

// TestMetricsUnavailableAndTableFull: with the only backend down and a
// table of two buckets, requests end as 503 of two kinds, each counted
// as what the client saw.
func TestMetricsUnavailableAndTableFull(t *testing.T) {
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":               "http://" + freeAddr(t), // nothing listens
		"EQUALIZER_CLIENT_KEY":             "header:X-Client",
		"EQUALIZER_BUCKET_CAPACITY":        "1",
		"EQUALIZER_BUCKET_REFILL_AMOUNT":   "1",
		"EQUALIZER_BUCKET_REFILL_INTERVAL": "1h",
		"EQUALIZER_MAX_BUCKETS":            "2",
		"EQUALIZER_HEALTH_INTERVAL":        "100ms",
	})
	waitFor(t, "the health check to take the backend out", func() bool {
		m, _ := in.scrape(t)
		return m["equalizer_healthy_backends"] == 0
	})
	unavailable, full := 0, 0
	for i := range 20 {
		code, _, body := in.get(t, "/", "X-Client", fmt.Sprintf("k%d", i))
		switch {
		case code == 503 && strings.Contains(body, "table full"):
			full++
		case code == 503 && strings.Contains(body, "no healthy backend"):
			unavailable++
		default:
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	m, _ := in.scrape(t)
	if unavailable == 0 || full == 0 {
		t.Fatalf("%d unavailable, %d table full: the test did not reach both", unavailable, full)
	}
	if m[`equalizer_requests_total{outcome="unavailable"}`] != float64(unavailable) ||
		m[`equalizer_requests_total{outcome="table_full"}`] != float64(full) ||
		m[`equalizer_limiter_decisions_total{decision="table_full"}`] != float64(full) {
		t.Fatalf("clients saw %d unavailable and %d table full; metrics say %v and %v", unavailable, full,
			m[`equalizer_requests_total{outcome="unavailable"}`], m[`equalizer_requests_total{outcome="table_full"}`])
	}
	in.stop(t, syscall.SIGTERM)
}

// TestRejectedConnectionsAreCounted: past EQUALIZER_MAX_CLIENT_CONNS open
// connections the server answers 503 before reading a request; /metrics
// counts those connections, which no request counter sees.
func TestRejectedConnectionsAreCounted(t *testing.T) {
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":         backend,
		"EQUALIZER_MAX_CLIENT_CONNS": "2",
		"EQUALIZER_HEALTH_INTERVAL":  "1h",
	})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 2 { // two keep-alive connections, served and left open
		c, err := net.Dial("tcp", in.proxy)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))         //nolint:errcheck
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n") //nolint:errcheck
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v %v", resp, err)
		}
	}
	refused := 0
	for range 3 {
		c, err := net.Dial("tcp", in.proxy)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))         //nolint:errcheck
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n") //nolint:errcheck
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode == 503 {
			refused++
		}
		c.Close()
	}
	if refused != 3 {
		t.Fatalf("%d of 3 connections past the limit were refused with a 503", refused)
	}
	if m, _ := in.scrape(t); m["equalizer_rejected_connections_total"] != 3 || m[`equalizer_requests_total{outcome="forwarded"}`] != 2 {
		t.Fatalf("rejected %v, forwarded %v; want 3 and 2", m["equalizer_rejected_connections_total"], m[`equalizer_requests_total{outcome="forwarded"}`])
	}
}
