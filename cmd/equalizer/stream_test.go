package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/valyala/fasthttp"

	"gopher-equalizer/pool/pooltest"
)

// pattern is a deterministic, incompressible byte stream of a given size:
// a 1 MiB random block, repeated.
type pattern struct {
	block []byte
	left  int64
	off   int
}

var patternBlock = func() []byte {
	b := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

func newPattern(size int64) *pattern { return &pattern{block: patternBlock, left: size} }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(int64(len(b)), p.left)], p.block[p.off:])
	p.off = (p.off + n) % len(p.block)
	p.left -= int64(n)
	return n, nil
}

func patternSum(size int64) string {
	h := sha256.New()
	io.Copy(h, newPattern(size)) //nolint:errcheck
	return hex.EncodeToString(h.Sum(nil))
}

// startHTTPBackend serves a Go net/http handler, the kind of backend most
// users run.
func startHTTPBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h}
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { s.Close() })
	return "http://" + ln.Addr().String()
}

// procStatus reads a field of /proc/<pid>/status in KiB.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	t.Fatalf("%s not in /proc/%d/status", field, pid)
	return 0
}

// transferHandler serves GET /download?size=&chunked= and PUT /upload,
// which answers the sha256 of what it read.
func transferHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(http.ResponseWriter, *http.Request) {}) // the health page
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		if r.URL.Query().Get("chunked") != "1" {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.Header().Set("Trailer", "X-Sha256")
		h := sha256.New()
		io.Copy(io.MultiWriter(w, h), newPattern(size)) //nolint:errcheck
		w.Header().Set("X-Sha256", hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	})
	return mux
}

func TestLargeTransfersStreamWithBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves gigabytes")
	}
	const size = 1 << 30
	backend := startHTTPBackend(t, transferHandler())
	in := startInstanceOf(t, plainBinary(t), map[string]string{
		"EQUALIZER_BACKENDS": backend, "EQUALIZER_LOG_LEVEL": "warn", "EQUALIZER_HEALTH_INTERVAL": "1h",
	})
	in.get(t, "/download?size=1000") // warm up
	idle := procStatus(t, in.cmd.Process.Pid, "VmRSS")
	want := patternSum(size)
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second, DisableCompression: true}}

	for _, chunked := range []string{"0", "1"} {
		start := time.Now()
		resp, err := client.Get(fmt.Sprintf("http://%s/download?size=%d&chunked=%s", in.proxy, size, chunked))
		if err != nil {
			t.Fatal(err)
		}
		ttfb := time.Since(start)
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != want {
			t.Fatalf("download chunked=%s: %d bytes, %v, sum mismatch=%v", chunked, n, err, hex.EncodeToString(h.Sum(nil)) != want)
		}
		if chunked == "1" {
			if len(resp.TransferEncoding) == 0 || resp.Trailer.Get("X-Sha256") != want {
				t.Errorf("chunked download: transfer encoding %v, trailer %v", resp.TransferEncoding, resp.Trailer)
			}
		} else if resp.ContentLength != size {
			t.Errorf("download lost its Content-Length: %d", resp.ContentLength)
		}
		t.Logf("download 1 GiB chunked=%s: %v, first byte after %v", chunked, time.Since(start), ttfb)
	}
	for _, c := range []struct {
		chunked, expect bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		start := time.Now()
		req, _ := http.NewRequest("PUT", "http://"+in.proxy+"/upload", newPattern(size))
		req.ContentLength = size
		if c.chunked {
			req.ContentLength = -1
		}
		if c.expect {
			req.Header.Set("Expect", "100-continue")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != fmt.Sprintf("%d %s", size, want) {
			t.Fatalf("upload chunked=%v expect=%v: %d %q", c.chunked, c.expect, resp.StatusCode, body)
		}
		t.Logf("upload 1 GiB chunked=%v expect=%v: %v", c.chunked, c.expect, time.Since(start))
	}
	peak := procStatus(t, in.cmd.Process.Pid, "VmHWM")
	t.Logf("proxy RSS: idle %d KiB, peak %d KiB", idle, peak)
	if peak-idle > 64<<10 {
		t.Fatalf("peak RSS %d KiB is more than 64 MiB above idle %d KiB", peak, idle)
	}
}

func TestStreamingKeepsPace(t *testing.T) {
	backend := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			for range 10 {
				fmt.Fprintf(w, "data: %d\n\n", time.Now().UnixNano())
				w.(http.Flusher).Flush()
				time.Sleep(100 * time.Millisecond)
			}
		case "/pieces":
			w.Header().Set("Trailer", "X-Done")
			for i := range 3 {
				fmt.Fprintf(w, "piece %d;", i)
				w.(http.Flusher).Flush()
				time.Sleep(200 * time.Millisecond)
			}
			w.Header().Set("X-Done", "yes")
		}
	}))
	in := startInstanceOf(t, plainBinary(t), map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_HEALTH_INTERVAL": "1h"})

	t.Run("server-sent events arrive as they are written", func(t *testing.T) {
		resp, err := http.Get("http://" + in.proxy + "/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		events := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				break
			}
			if ts, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
				sent, _ := strconv.ParseInt(ts, 10, 64)
				if lag := time.Since(time.Unix(0, sent)); lag > 50*time.Millisecond {
					t.Errorf("event %d arrived %v after it was written", events, lag)
				}
				events++
			}
		}
		if events != 10 {
			t.Fatalf("%d events, want 10", events)
		}
	})
	t.Run("chunked stays chunked, pieces flow, trailers stay trailers", func(t *testing.T) {
		c, err := net.Dial("tcp", in.proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /pieces HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n")
		start := time.Now()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("transfer encoding %v", resp.TransferEncoding)
		}
		first := make([]byte, len("piece 0;"))
		if _, err := io.ReadFull(resp.Body, first); err != nil || time.Since(start) > 150*time.Millisecond {
			t.Fatalf("first piece %q after %v (%v)", first, time.Since(start), err)
		}
		rest, _ := io.ReadAll(resp.Body)
		if string(first)+string(rest) != "piece 0;piece 1;piece 2;" {
			t.Fatalf("body %q", string(first)+string(rest))
		}
		if resp.Trailer.Get("X-Done") != "yes" || resp.Header.Get("X-Done") != "" {
			t.Fatalf("trailer %v, header %v", resp.Trailer, resp.Header)
		}
	})
	t.Run("an HTTP/1.0 client gets the body until close, never chunked", func(t *testing.T) {
		c, err := net.Dial("tcp", in.proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
		io.WriteString(c, "GET /pieces HTTP/1.0\r\n\r\n")
		raw, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		head, body, _ := strings.Cut(string(raw), "\r\n\r\n")
		if strings.Contains(strings.ToLower(head), "chunked") || body != "piece 0;piece 1;piece 2;" {
			t.Fatalf("HTTP/1.0 answer:\n%s", raw)
		}
	})
}

func TestLongPollWithDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 40 s")
	}
	t.Parallel()
	backend := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(40 * time.Second)
		io.WriteString(w, "news")
	}))
	in := startInstanceOf(t, plainBinary(t), map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_HEALTH_INTERVAL": "1h"})
	if code, _, body := in.get(t, "/poll"); code != 200 || body != "news" {
		t.Fatalf("long poll: %d %q", code, body)
	}
}

func TestWebSocketAndCustomUpgrade(t *testing.T) {
	up := websocket.Upgrader{}
	backend := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			return // the health page
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			kind, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if c.WriteMessage(kind, msg) != nil {
				return
			}
		}
	}))
	echo := startRawUpgradeBackend(t)
	in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_HEALTH_INTERVAL": "1h"})

	t.Run("websocket echo", func(t *testing.T) {
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+in.proxy+"/ws", nil)
		if err != nil {
			t.Fatalf("dial: %v %v", err, resp)
		}
		defer c.Close()
		for i := range 100 {
			msg := fmt.Sprintf("message %d", i)
			if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.ReadMessage()
			if err != nil || string(got) != msg {
				t.Fatalf("echo %d: %q %v", i, got, err)
			}
		}
		// Binary frames of random bytes and sizes: masked client bytes
		// hold any pattern, and every one must come back as sent.
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 300 {
			msg := make([]byte, 1+rng.IntN(40<<10))
			for j := range msg {
				msg[j] = byte(rng.Uint32())
			}
			if i%3 == 0 {
				for j := 0; j+1 < len(msg); j += 97 {
					msg[j], msg[j+1] = '\n', '\n' // what the head repair once rewrote
				}
			}
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.ReadMessage()
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("binary echo %d (%d bytes): %d bytes back, equal %v, %v", i, len(msg), len(got), bytes.Equal(got, msg), err)
			}
		}
		if _, _, body := in.getAdmin(t, "/metrics"); !strings.Contains(body, "equalizer_open_tunnels 1") {
			t.Errorf("open tunnel not in /metrics")
		}
	})
	t.Run("custom protocol with half-close", func(t *testing.T) {
		in2 := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": echo, "EQUALIZER_HEALTH_INTERVAL": "1h"})
		c, err := net.Dial("tcp", in2.proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
		io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "echo-proto" {
			t.Fatalf("handshake: %v %+v", err, resp)
		}
		// Tunnel bytes are not HTTP: a blank line of bare line feeds must
		// not be mended into CRLFs as a request head's would be (it
		// corrupted WebSocket frames whose masked bytes held 0x0A 0x0A).
		const hello = "hello\n\nworld\r\n\n"
		io.WriteString(c, hello)
		got := make([]byte, len(hello))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != hello {
			t.Fatalf("echo %q %v, want %q", got, err, hello)
		}
		c.(*net.TCPConn).CloseWrite() //nolint:errcheck
		rest, _ := io.ReadAll(br)
		if string(rest) != "bye" {
			t.Fatalf("after half-close: %q, want the backend's last word", rest)
		}
	})
	t.Run("a non-101 answer is an ordinary response", func(t *testing.T) {
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+in.proxy+"/ws", http.Header{"Sec-WebSocket-Version": {"7"}})
		if err == nil {
			c.Close()
			t.Fatal("a bad handshake was upgraded")
		}
		if resp == nil || resp.StatusCode != 400 {
			t.Fatalf("got %v", resp)
		}
	})
}

// startRawUpgradeBackend switches to "echo-proto", echoes until the client
// half-closes, then says "bye" and closes.
func startRawUpgradeBackend(t *testing.T) string {
	url, _ := pooltest.RawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), "echo-proto") {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n")
		io.Copy(c, br) //nolint:errcheck
		io.WriteString(c, "bye")
	})
	return url
}

func (in *instance) getAdmin(t *testing.T, path string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get("http://" + in.admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// requireTool finds a peer program; without it the test is skipped loudly
// on a laptop and fails under CI=true, where .ci/run installs it.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; .ci/run installs it", name)
	}
	t.Skipf("SKIPPED: %s is not installed", name)
	return ""
}

func TestHTTP10ClientsWithAB(t *testing.T) {
	ab := requireTool(t, "ab")
	python := requireTool(t, "python3")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "page.html"), []byte(strings.Repeat("hello ", 200)), 0o644); err != nil {
		t.Fatal(err)
	}
	pyAddr := freeAddr(t)
	_, pyPort, _ := net.SplitHostPort(pyAddr)
	// Python's stock http.server, with one change: its listen backlog of 5
	// drops connections under 50 concurrent clients even without a proxy
	// (ab -c 50 straight at it loses requests), so it gets 128.
	script := `import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
Server(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
`
	py := exec.Command(python, "-c", script, pyPort, dir)
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { py.Process.Kill(); py.Wait() }) //nolint:errcheck
	fast := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(strings.Repeat("hello ", 200)) })
	waitTCP(t, pyAddr)

	for name, backend := range map[string]string{"python http.server": "http://" + pyAddr, "fasthttp": fast} {
		in := startInstanceOf(t, plainBinary(t), map[string]string{
			"EQUALIZER_BACKENDS": backend, "EQUALIZER_HEALTH_INTERVAL": "1h", "EQUALIZER_RATE_LIMIT": "false",
		})
		for _, keepAlive := range []bool{false, true} {
			args := []string{"-n", "5000", "-c", "50", "-s", "10"}
			if keepAlive {
				args = append(args, "-k")
			}
			out, err := exec.Command(ab, append(args, "http://"+in.proxy+"/page.html")...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s ab %v: %v\n%s", name, args, err, out)
			}
			text := string(out)
			if !strings.Contains(text, "Complete requests:      5000") || !strings.Contains(text, "Failed requests:        0") ||
				strings.Contains(text, "Non-2xx responses") {
				t.Fatalf("%s ab %v:\n%s", name, args, text)
			}
		}
	}
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("%s not listening", addr)
}

func TestBodyLimitAndTunnelShutdown(t *testing.T) {
	backend := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
			if err == nil {
				defer c.Close()
				c.ReadMessage() //nolint:errcheck
			}
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	}))
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS": backend, "EQUALIZER_HEALTH_INTERVAL": "1h", "EQUALIZER_MAX_BODY_SIZE": "1000",
		"EQUALIZER_SHUTDOWN_TIMEOUT": "2s",
	})
	put := func(size int64, chunked bool) int {
		req, _ := http.NewRequest("PUT", "http://"+in.proxy+"/up", newPattern(size))
		req.ContentLength = size
		if chunked {
			req.ContentLength = -1
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(1000, false); code != 200 {
		t.Fatalf("at the limit: %d", code)
	}
	if code := put(1001, false); code != 413 {
		t.Fatalf("Content-Length over the limit: %d, want 413", code)
	}
	if code := put(100_000, true); code != 413 {
		t.Fatalf("chunked over the limit: %d, want 413", code)
	}
	// Responses are never cut for size.
	if code, _, body := in.get(t, "/down"); code != 200 || body != "0" {
		t.Fatalf("GET: %d %q", code, body)
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+in.proxy+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if code := in.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Fatal("the tunnel outlived the graceful stop")
	}
	if !strings.Contains(in.log(), "closed open Upgrade tunnels") {
		t.Errorf("no log line about closed tunnels")
	}
}
