package proxy

import (
	"strconv"
	"testing"

	"gopher-equalizer/limiter"
)

func TestEmptyBucketGets429WithHeaders(t *testing.T) {
	url, got := startBackend(t, nil)
	// 3 tokens, one token every 10 s: no refill within the test.
	lim := limiter.New(limiter.Config{Capacity: 3, RatePerSec: 0.1}, limiter.NewMemoryStore())
	h := startProxy(t, options{lim: lim}, url)
	for i := range 3 {
		if resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		recv(t, got)
	}
	resp, body := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.StatusCode != 429 || body != "rate limit exceeded\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if len(got) != 0 {
		t.Fatalf("a limited request reached the backend")
	}
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	reset, _ := strconv.Atoi(resp.Header.Get("RateLimit-Reset"))
	if retry < 9 || retry > 10 {
		t.Errorf("Retry-After = %q, want about 10 s until one token", resp.Header.Get("Retry-After"))
	}
	if reset < 29 || reset > 30 {
		t.Errorf("RateLimit-Reset = %q, want about 30 s until full", resp.Header.Get("RateLimit-Reset"))
	}
	if resp.Header.Get("RateLimit-Limit") != "3" || resp.Header.Get("RateLimit-Remaining") != "0" {
		t.Errorf("RateLimit headers: %v", resp.Header)
	}
	if h.proxy.Stats.Requests[Limited].Load() != 1 || h.proxy.Stats.Requests[Forwarded].Load() != 3 {
		t.Errorf("stats: limited %d forwarded %d", h.proxy.Stats.Requests[Limited].Load(), h.proxy.Stats.Requests[Forwarded].Load())
	}
}

func TestTableFullRefusesNewClientsWith503(t *testing.T) {
	url, _ := startBackend(t, nil)
	lim := limiter.New(limiter.Config{Capacity: 5, RatePerSec: 0.1, MaxBuckets: 1}, limiter.NewMemoryStore())
	h := startProxy(t, options{lim: lim, key: "header:X-Client"}, url)
	if resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Client: a\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("first client: %d", resp.StatusCode)
	}
	resp, body := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Client: b\r\n\r\n")
	if resp.StatusCode != 503 || body != "rate limiter table full\n" || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("second client: %d %q", resp.StatusCode, body)
	}
}

func TestRateLimitHeadersOnForwardedResponses(t *testing.T) {
	url, got := startBackend(t, nil)
	lim := limiter.New(limiter.Config{Capacity: 10, RatePerSec: 0.1}, limiter.NewMemoryStore())
	h := startProxy(t, options{lim: lim, headers: true}, url)
	resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	recv(t, got)
	if resp.StatusCode != 200 || resp.Header.Get("RateLimit-Limit") != "10" || resp.Header.Get("RateLimit-Remaining") != "9" ||
		resp.Header.Get("RateLimit-Reset") != "10" {
		t.Fatalf("forwarded response: %d %v", resp.StatusCode, resp.Header)
	}
	h = startProxy(t, options{lim: lim}, url)
	resp, _ = raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	recv(t, got)
	if resp.Header.Get("RateLimit-Limit") != "" {
		t.Fatalf("RateLimit headers without the setting: %v", resp.Header)
	}
}
