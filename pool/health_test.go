package pool

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gopher-equalizer/pool/pooltest"
	"gopher-equalizer/upstream"
)

// startRawHealth answers every request read on a connection with answer.
func startRawHealth(t *testing.T, answer func(c net.Conn)) string {
	url, _ := pooltest.RawBackend(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			answer(c)
		}
	})
	return url
}

// TestHealthCheckNeverFlaps probes backends that real frameworks resemble:
// head and body in two writes, a 20 KiB page, a slow but healthy answer.
// 100 rounds in a row must never take one out.
func TestHealthCheckNeverFlaps(t *testing.T) {
	page := strings.Repeat("x", 20<<10)
	backends := map[string]func(c net.Conn){
		"head and body in two writes": func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
			time.Sleep(time.Millisecond)
			io.WriteString(c, "ok")
		},
		"20 KiB page": func(c net.Conn) {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(page), page)
		},
		"slow but healthy": func(c net.Conn) {
			time.Sleep(30 * time.Millisecond)
			io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		},
		"chunked page": func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			io.WriteString(c, "0\r\n\r\n")
		},
	}
	var bs []*Backend
	names := map[*Backend]string{}
	for name, answer := range backends {
		b, err := NewBackend(startRawHealth(t, answer), upstream.Options{})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
		names[b] = name
	}
	p := New(bs, &RoundRobin{})
	c := NewChecker(p, HealthConfig{Timeout: time.Second, Path: "/health"}, zerolog.Nop())
	for round := range 100 {
		c.CheckOnce()
		for _, b := range bs {
			if !b.Healthy() {
				t.Fatalf("round %d: %s was taken out", round, names[b])
			}
		}
	}
}

func TestHealthStatusSet(t *testing.T) {
	set, err := ParseStatusSet("200,204, 300-302")
	if err != nil {
		t.Fatal(err)
	}
	for code, want := range map[int]bool{200: true, 204: true, 301: true, 201: false, 303: false, 500: false} {
		if set.Has(code) != want {
			t.Errorf("%d: %v", code, !want)
		}
	}
	var def StatusSet
	if !def.Has(200) || !def.Has(399) || def.Has(404) || def.Has(503) {
		t.Errorf("default set is not 200-399")
	}
	for _, bad := range []string{"", "abc", "99", "600", "300-200", "200-"} {
		if _, err := ParseStatusSet(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// A 404 health page is a misconfigured path: unhealthy by default, as
	// in HAProxy.
	url := startRawHealth(t, func(c net.Conn) { io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n") })
	b, _ := NewBackend(url, upstream.Options{})
	p := New([]*Backend{b}, &RoundRobin{})
	NewChecker(p, HealthConfig{Timeout: time.Second, Path: "/health"}, zerolog.Nop()).CheckOnce()
	if b.Healthy() {
		t.Error("404 counted as healthy")
	}
}
