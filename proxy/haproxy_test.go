package proxy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"gopher-equalizer/limiter"
)

// requireTool finds a peer program such as haproxy. Without it the test is
// skipped loudly on a laptop and fails under CI=true, where .ci/run installs it.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; .ci/run installs it", name)
	}
	t.Skipf("SKIPPED: %s is not installed (apt-get install %s); this test compares behaviour behind a real %s", name, name, name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// startHAProxy runs HAProxy in front of addr with "option forwardfor", as
// operators put it in front of a proxy, and returns its address.
func startHAProxy(t *testing.T, addr string) string {
	t.Helper()
	bin := requireTool(t, "haproxy")
	front := freeLocalAddr(t)
	cfg := fmt.Sprintf(`global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    option forwardfor
frontend fe
    bind %s
    default_backend be
backend be
    server equalizer %s
`, front, addr)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck
	waitListening(t, front)
	return front
}

// getFrom sends one request from the given loopback source address, so
// that HAProxy sees a different client for each.
func getFrom(t *testing.T, source, addr, header string) int {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 5 * time.Second}
	resp, _ := rawFrom(t, d, addr, "GET / HTTP/1.1\r\nHost: h\r\n"+header+"\r\n")
	return resp.StatusCode
}

func TestRateLimitBehindHAProxy(t *testing.T) {
	url, _ := startBackend(t, nil)
	// Two tokens per client and no refill within the test.
	newLim := func() *limiter.Limiter {
		return limiter.New(limiter.Config{Capacity: 2, RatePerSec: 0.001}, limiter.NewMemoryStore())
	}
	check := func(t *testing.T, lim *limiter.Limiter, front string, clients map[string]string, header func(src string) string) {
		t.Helper()
		for src := range clients {
			for i, want := range []int{200, 200, 429} {
				if got := getFrom(t, src, front, header(src)); got != want {
					t.Fatalf("client %s request %d: %d, want %d (each client must have its own bucket)", src, i, got, want)
				}
			}
		}
		for src, key := range clients {
			if _, ok := lim.Get(key, 0); !ok {
				t.Errorf("client %s: no bucket %q; buckets: %v", src, key, lim.List(0, 10, 0))
			}
		}
	}
	t.Run("ip key from HAProxy's X-Forwarded-For", func(t *testing.T) {
		lim := newLim()
		h := startProxy(t, options{lim: lim, trusted: []string{"127.0.0.1/32"}}, url)
		front := startHAProxy(t, h.addr)
		clients := map[string]string{"127.0.0.2": "127.0.0.2", "127.0.0.3": "127.0.0.3", "127.0.0.4": "127.0.0.4"}
		// Each client also forges an X-Forwarded-For line of its own.
		check(t, lim, front, clients, func(string) string { return "X-Forwarded-For: 6.6.6.6\r\n" })
		if _, ok := lim.Get("6.6.6.6", 0); ok {
			t.Errorf("a forged X-Forwarded-For became a key")
		}
		if _, ok := lim.Get("127.0.0.1", 0); ok {
			t.Errorf("a client was charged to HAProxy's own address")
		}
	})
	t.Run("header key in HAProxy's lower case", func(t *testing.T) {
		lim := newLim()
		h := startProxy(t, options{lim: lim, key: "header:X-Client"}, url)
		front := startHAProxy(t, h.addr)
		clients := map[string]string{"127.0.0.2": "alice-127.0.0.2", "127.0.0.3": "alice-127.0.0.3"}
		check(t, lim, front, clients, func(src string) string { return "X-Client: alice-" + src + "\r\n" })
	})
}
