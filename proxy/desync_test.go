package proxy

import (
	"bufio"
	"fmt"
	"gopher-equalizer/upstream"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// forged is a whole HTTP response that a poisoning backend smuggles after a
// real answer. A proxy that reuses the connection hands it to whoever sends
// the next request on it.
const forged = "HTTP/1.1 200 OK\r\nSet-Cookie: session=stolen\r\nContent-Length: 6\r\n\r\nforged"

// startKeepAliveRawBackend serves keep-alive connections with Go's request
// parser and answer, which writes raw bytes: a backend that gets HTTP
// framing wrong in the ways real servers do.
func startKeepAliveRawBackend(t *testing.T, answer func(w io.Writer, r *http.Request)) string {
	t.Helper()
	url, _ := startCountingRawBackend(t, answer)
	return url
}

// startCountingRawBackend is startKeepAliveRawBackend that also counts the
// connections it accepted.
func startCountingRawBackend(t *testing.T, answer func(w io.Writer, r *http.Request)) (string, *atomic.Int64) {
	t.Helper()
	return acceptRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			answer(c, r)
		}
	})
}

// echoID answers a GET with the id of its query, so every client can check
// that the answer it got is its own.
func echoID(w io.Writer, r *http.Request) {
	body := "you are " + r.URL.Query().Get("id")
	if r.Method == "HEAD" {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
		return
	}
	fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

func TestNoResponseReachesTheWrongClient(t *testing.T) {
	cases := map[string]func(w io.Writer, r *http.Request){
		// Python's http.server with a handler that writes a body for HEAD
		// too: head and body in two writes.
		"HEAD answered with a body": func(w io.Writer, r *http.Request) {
			if r.Method == "HEAD" {
				io.WriteString(w, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(forged)))
				io.WriteString(w, forged)
				return
			}
			echoID(w, r)
		},
		// A handler that answers without reading the request body: the
		// backend then parses the body as a request of its own and answers it.
		"handler ignores the request body": func(w io.Writer, r *http.Request) {
			if r.Method == "POST" {
				io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return // r.Body is left unread: the next ReadRequest parses it
			}
			if r.URL.Path == "/smuggled" {
				io.WriteString(w, forged)
				return
			}
			echoID(w, r)
		},
		// Stray bytes after a complete answer, in a write of their own.
		"stray bytes after an answer": func(w io.Writer, r *http.Request) {
			if r.URL.Path == "/poison" {
				io.WriteString(w, "HTTP/1.1 204 No Content\r\n\r\n")
				io.WriteString(w, forged)
				return
			}
			echoID(w, r)
		},
	}
	poison := map[string]string{
		"HEAD answered with a body":        "HEAD /poison HTTP/1.1\r\nHost: h\r\n\r\n",
		"handler ignores the request body": "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 38\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\n",
		"stray bytes after an answer":      "GET /poison HTTP/1.1\r\nHost: h\r\n\r\n",
	}
	for name, answer := range cases {
		t.Run(name, func(t *testing.T) {
			url := startKeepAliveRawBackend(t, answer)
			h := startProxy(t, options{}, url)
			wrong := 0
			for i := range 100 {
				if i%10 == 0 {
					raw(t, h.addr, poison[name])
				}
				resp, body := raw(t, h.addr, fmt.Sprintf("GET /?id=%d HTTP/1.1\r\nHost: h\r\n\r\n", i))
				if want := fmt.Sprintf("you are %d", i); body != want || resp.Header.Get("Set-Cookie") != "" {
					wrong++
					t.Logf("client %d got %d %q %v", i, resp.StatusCode, body, resp.Header)
				}
			}
			if wrong > 0 {
				t.Fatalf("%d of 100 clients got an answer that was not theirs", wrong)
			}
			if h.pool.Backends()[0].Unsolicited() == 0 {
				t.Errorf("no unsolicited bytes counted")
			}
		})
	}
}

// TestConnectionsAreReused guards the guards: requests without a body keep
// their backend connection alive; only requests with one close it. The
// requests are spaced by upstream.Settle, so one connection serves them all.
func TestConnectionsAreReused(t *testing.T) {
	url, accepted := startCountingRawBackend(t, echoID)
	h := startProxy(t, options{}, url)
	c := &fasthttp.HostClient{Addr: h.addr, MaxConns: 1}
	for _, method := range []string{"GET", "HEAD", "OPTIONS", "DELETE"} {
		for range 10 {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.Header.SetMethod(method)
			req.SetRequestURI("http://" + h.addr + "/?id=1")
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				t.Fatalf("%s: %v %d", method, err, resp.StatusCode())
			}
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
			time.Sleep(upstream.Settle + time.Millisecond)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("40 requests without a body used %d backend connections, want 1", n)
	}
	for range 3 {
		if code, _, err := c.Post(nil, "http://"+h.addr+"/?id=2", &fasthttp.Args{}); err != nil || code != 200 {
			t.Fatalf("POST: %v %d", err, code)
		}
		time.Sleep(upstream.Settle + time.Millisecond)
	}
	raw(t, h.addr, "POST /?id=3 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
	time.Sleep(upstream.Settle + time.Millisecond)
	raw(t, h.addr, "GET /?id=4 HTTP/1.1\r\nHost: h\r\n\r\n")
	if n := accepted.Load(); n != 2 {
		t.Fatalf("after a request with a body, %d connections, want 2 (one closed after the body)", n)
	}
}

func TestUnrequested101IsABadGateway(t *testing.T) {
	url := startKeepAliveRawBackend(t, func(w io.Writer, r *http.Request) {
		io.WriteString(w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
	})
	h := startProxy(t, options{}, url)
	if resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 502 {
		t.Fatalf("got %d, want 502", resp.StatusCode)
	}
}

// buildBackend builds bench/backend, a real fasthttp server, as a binary
// that can be killed like a real backend.
func buildBackend(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "backend")
	if out, err := exec.Command("go", "build", "-o", bin, "../bench/backend").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestBackendKilledUnderLoadGivesNoErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills backend processes")
	}
	bin := buildBackend(t)
	var urls []string
	var procs []*exec.Cmd
	for range 3 {
		addr := freeLocalAddr(t)
		cmd := exec.Command(bin, addr)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck
		procs = append(procs, cmd)
		urls = append(urls, "http://"+addr)
		waitListening(t, addr)
	}
	h := startProxy(t, options{}, urls...)

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			c := &fasthttp.HostClient{Addr: h.addr, MaxConns: 1}
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, _, err := c.Get(nil, "http://"+h.addr+"/")
				if err != nil || code != 200 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	procs[1].Process.Signal(syscall.SIGKILL) //nolint:errcheck
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d answered, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d GETs failed after a backend was killed", failed.Load())
	}
	if ok.Load() == 0 {
		t.Fatal("no request answered")
	}
}

func freeLocalAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("%s is not listening", addr)
}
