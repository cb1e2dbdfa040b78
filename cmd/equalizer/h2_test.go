package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cClient speaks HTTP/2 with prior knowledge over one connection.
func h2cClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
}

// TestHTTP2WithCurl: curl --http2 over TLS gets h2 by ALPN, curl
// --http2-prior-knowledge gets h2c on the cleartext listener, HTTP/1.1
// still works on both; and HTTP/2 and HTTP/1.1 clients share one bucket
// (the streams of one connection are one client).
func TestHTTP2WithCurl(t *testing.T) {
	curl := requireTool(t, "curl")
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "proxy", 40)
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "proto=%s xff=%s", ctx.Request.Header.Protocol(), ctx.Request.Header.Peek("X-Forwarded-For"))
	})
	env := map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_BUCKET_CAPACITY": "100000"}
	plain := startInstance(t, env)
	env["EQUALIZER_TLS_CERT"], env["EQUALIZER_TLS_KEY"] = cert, key
	secure := startInstance(t, env)
	_, port, _ := net.SplitHostPort(secure.proxy)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--http2", "--cacert", filepath.Join(ca.dir, "ca.pem"), "https://localhost:" + port + "/"}, "2"},
		{[]string{"--http1.1", "--cacert", filepath.Join(ca.dir, "ca.pem"), "https://localhost:" + port + "/"}, "1.1"},
		{[]string{"--http2-prior-knowledge", "http://" + plain.proxy + "/"}, "2"},
		{[]string{"--http1.1", "http://" + plain.proxy + "/"}, "1.1"},
	} {
		args := append([]string{"-sS", "--max-time", "10", "-w", "\n%{http_version} %{http_code}"}, tc.args...)
		out, err := exec.Command(curl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", tc.args, err, out)
		}
		lines := strings.Split(string(out), "\n")
		if got := lines[len(lines)-1]; got != tc.want+" 200" || lines[0] != "proto=HTTP/1.1 xff=127.0.0.1" {
			t.Fatalf("curl %v: %q", tc.args, out)
		}
	}

	// One bucket of 4 for 127.0.0.1: 3 streams at once on one HTTP/2
	// connection, 1 HTTP/1.1 request, then both protocols refused.
	limited := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_BUCKET_CAPACITY": "4",
		"EQUALIZER_BUCKET_REFILL_AMOUNT": "1", "EQUALIZER_BUCKET_REFILL_INTERVAL": "1m"})
	h2 := h2cClient()
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 3 {
		wg.Go(func() {
			if resp, err := h2.Get("http://" + limited.proxy + "/"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 && resp.ProtoMajor == 2 {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if code, _, _ := limited.get(t, "/"); code != 200 || ok.Load() != 3 {
		t.Fatalf("3 HTTP/2 streams %d admitted, then HTTP/1.1 %d", ok.Load(), code)
	}
	resp, err := h2.Get("http://" + limited.proxy + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "60" || resp.Header.Get("RateLimit-Policy") != `"default";q=4;w=240` || string(body) != "rate limit exceeded\n" {
		t.Fatalf("5th request over HTTP/2: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if code, _, _ := limited.get(t, "/"); code != 429 {
		t.Fatalf("6th request over HTTP/1.1: %d", code)
	}
}

// TestHTTP2DrainOnSIGTERM: a stream in flight finishes after SIGTERM, the
// connection gets GOAWAY (a new stream on it is refused, not lost), and
// the process exits 0.
func TestHTTP2DrainOnSIGTERM(t *testing.T) {
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(time.Second)
		ctx.SetBodyString("slow ok")
	})
	in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend})
	conn, err := net.Dial("tcp", in.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+in.proxy+"/", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	time.Sleep(300 * time.Millisecond)
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	if got := <-done; got != "200 slow ok" {
		t.Fatalf("stream in flight during the drain: %s", got)
	}
	// GOAWAY arrived: the client connection takes no new stream.
	waitFor(t, "GOAWAY on the connection", func() bool { return !cc.CanTakeNewRequest() })
	select {
	case err := <-in.done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, in.log())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after the drain")
	}
}

// h2cBackend serves handler over HTTP/2 with prior knowledge (net/http's
// server, not gRPC) and returns its h2c:// URL.
func h2cBackend(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	s := &http.Server{Protocols: &protocols, Handler: handler}
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { s.Close() })
	return "h2c://" + ln.Addr().String()
}

// TestHTTP1ClientToH2CBackend: an HTTP/1.1 client reaches an h2c://
// backend (a plain HTTP/2 server, not gRPC), body both ways.
func TestHTTP1ClientToH2CBackend(t *testing.T) {
	backend := h2cBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s got %d bytes", r.Proto, r.Method, r.URL.RequestURI(), len(b))
	})
	in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend})
	resp, err := http.Post("http://"+in.proxy+"/up?x=1", "text/plain", strings.NewReader(strings.Repeat("a", 100000)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 || string(body) != "HTTP/2.0 POST /up?x=1 got 100000 bytes" {
		t.Fatalf("%d %s %q", resp.StatusCode, resp.Proto, body)
	}
}

// TestHTTP2RapidReset (CVE-2023-44487) through the real binary: one
// connection opens streams and resets each at once, 20,000 times. The
// proxy must stay responsive to other clients meanwhile, and the attacker
// must not get more handlers than its stream limit allows: the HTTP/2
// server (golang.org/x/net, pinned in go.mod) queues handlers beyond
// MaxConcurrentStreams and closes a connection whose queue overflows.
func TestHTTP2RapidReset(t *testing.T) {
	var seen atomic.Int64
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		seen.Add(1)
		time.Sleep(50 * time.Millisecond)
		ctx.SetBodyString("ok")
	})
	in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_BUCKET_CAPACITY": "1000000"})
	conn, err := net.Dial("tcp", in.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var goaway atomic.Value
	go func() { // read what the server says until it closes
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				goaway.Store(g.ErrCode.String())
			}
		}
	}()
	var hbuf strings.Builder
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", in.proxy}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := []byte(hbuf.String())

	// Another client, during the flood: every one of its requests is
	// answered (the slowest is logged, not judged: no speed in tests).
	type served struct {
		ok, failed int
		slowest    time.Duration
	}
	result := make(chan served, 1)
	stop := make(chan struct{})
	go func() {
		var s served
		c := &http.Client{Timeout: 10 * time.Second}
		for {
			select {
			case <-stop:
				result <- s
				return
			default:
			}
			start := time.Now()
			resp, err := c.Get("http://" + in.proxy + "/")
			if err != nil || resp.StatusCode != 200 {
				s.failed++
				continue
			}
			resp.Body.Close()
			s.ok++
			s.slowest = max(s.slowest, time.Since(start))
		}
	}()
	sent := 0
	for i := range 20000 {
		id := uint32(2*i + 1)
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil {
			break
		}
		if fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		sent++
	}
	time.Sleep(time.Second)
	close(stop)
	other := <-result
	t.Logf("streams opened and reset: %d; requests that reached the backend: %d; GOAWAY: %v; other client: %d answered, slowest %v",
		sent, seen.Load(), goaway.Load(), other.ok, other.slowest)
	if other.ok == 0 || other.failed > 0 {
		t.Fatalf("another client during the flood: %d answered, %d failed", other.ok, other.failed)
	}
	if int(seen.Load()) >= sent {
		t.Fatalf("every reset stream reached the backend (%d of %d)", seen.Load(), sent)
	}
	if code, _, _ := in.get(t, "/"); code != 200 {
		t.Fatalf("after the flood: %d", code)
	}
}

// TestChromiumGetsH2: Chromium loading a page through the TLS listener
// negotiates h2 (Navigation Timing's nextHopProtocol).
func TestChromiumGetsH2(t *testing.T) {
	browser := chromium(t)
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "proxy", 41)
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/html")
		ctx.SetBodyString("<!doctype html><title>through h2</title><p>hello")
	})
	in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_TLS_CERT": cert, "EQUALIZER_TLS_KEY": key})
	_, port, _ := net.SplitHostPort(in.proxy)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("headless", "new"), chromedp.Flag("ignore-certificate-errors", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()
	if err := chromedp.Do(ctx, chromedp.Navigate("https://localhost:"+port+"/")); err != nil {
		t.Fatal(err)
	}
	proto, err := chromedp.Run(ctx, chromedp.Evaluate[string](`performance.getEntriesByType("navigation")[0].nextHopProtocol`))
	if err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.title`))
	if err != nil {
		t.Fatal(err)
	}
	if proto != "h2" || title != "through h2" {
		t.Fatalf("Chromium: protocol %q, title %q", proto, title)
	}
}

// h2specKnown are the h2spec cases the proxy fails on purpose or by its
// HTTP/2 library's choice (README, "HTTP/2 and gRPC").
var h2specKnown = map[string][]string{
	"h2c": {
		"3.5/2 Sends invalid connection preface",
		"6.5.3/1 Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE",
		"8.1.2.2/1 Sends a HEADERS frame that contains the connection-specific header field",
		"8.1.2.2/2 Sends a HEADERS frame that contains the TE header field with any value other than \"trailers\"",
	},
	"tls": {
		"6.5.3/1 Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE",
		"8.1.2.2/1 Sends a HEADERS frame that contains the connection-specific header field",
		"8.1.2.2/2 Sends a HEADERS frame that contains the TE header field with any value other than \"trailers\"",
	},
}

// TestH2Spec runs h2spec (github.com/summerwind/h2spec; .ci/run installs
// it) against both listeners: every case passes but the known ones.
func TestH2Spec(t *testing.T) {
	h2spec, err := exec.LookPath("h2spec")
	if err != nil {
		if p := filepath.Join(os.Getenv("HOME"), "go", "bin", "h2spec"); fileExists(p) {
			h2spec = p
		} else {
			h2spec = requireTool(t, "h2spec")
		}
	}
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "proxy", 42)
	// A page of some kilobytes: h2spec's flow-control cases need a body
	// longer than the window they set, and skip with a tiny one.
	page := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(strings.Repeat("page ", 1000)) })
	env := map[string]string{"EQUALIZER_BACKENDS": page, "EQUALIZER_BUCKET_CAPACITY": "1000000"}
	plain := startInstance(t, env)
	env["EQUALIZER_TLS_CERT"], env["EQUALIZER_TLS_KEY"] = cert, key
	secure := startInstance(t, env)
	for name, in := range map[string]*instance{"h2c": plain, "tls": secure} {
		host, port, _ := net.SplitHostPort(in.proxy)
		args := []string{"-h", host, "-p", port, "-o", "3", "-j", filepath.Join(t.TempDir(), "report.xml")}
		if name == "tls" {
			args = append(args, "-t", "-k")
		}
		out, _ := exec.Command(h2spec, args...).CombinedOutput()
		failed := h2specFailures(string(out))
		if strings.Join(failed, "\n") != strings.Join(h2specKnown[name], "\n") {
			t.Fatalf("h2spec %s: failures\n%s\nwant\n%s\n\n%s", name, strings.Join(failed, "\n"), strings.Join(h2specKnown[name], "\n"), out)
		}
		summary := strings.TrimSpace(string(out[strings.LastIndex(string(out[:len(out)-1]), "\n")+1:]))
		if !strings.Contains(summary, " 0 skipped") {
			t.Fatalf("h2spec %s skipped cases: %s", name, summary)
		}
		t.Logf("h2spec %s: %s", name, summary)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// h2specFailures lists the failed cases of h2spec's report as
// "section/number title", from its "Failures:" part.
func h2specFailures(out string) []string {
	i := strings.Index(out, "Failures:")
	if i < 0 {
		return nil
	}
	var failed []string
	section := ""
	for _, line := range strings.Split(out[i:], "\n") {
		l := strings.TrimSpace(line)
		if f := strings.Fields(l); len(f) > 1 && strings.HasSuffix(f[0], ".") && strings.Trim(f[0], "0123456789.") == "" {
			section = strings.TrimSuffix(f[0], ".")
		}
		if rest, ok := strings.CutPrefix(l, "× "); ok {
			num, title, _ := strings.Cut(rest, ": ")
			failed = append(failed, section+"/"+num+" "+title)
		}
	}
	sort.Strings(failed)
	return failed
}

// TestHTTP2BodyAndHeaderLimits: EQUALIZER_MAX_BODY_SIZE holds for HTTP/2
// (from the declared length, and mid-stream for a body without one, as a
// gRPC call's), and EQUALIZER_MAX_HEADER_SIZE bounds the header list.
func TestHTTP2BodyAndHeaderLimits(t *testing.T) {
	var got atomic.Int64
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		got.Add(int64(len(ctx.Request.Body())))
		ctx.SetBodyString("ok")
	})
	in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_MAX_BODY_SIZE": "1000",
		"EQUALIZER_MAX_HEADER_SIZE": "4096"})
	c := h2cClient()
	post := func(body io.Reader, header ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+in.proxy+"/up", body)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if code, body := post(strings.NewReader(strings.Repeat("a", 1000))); code != 200 || body != "ok" {
		t.Fatalf("1000 bytes: %d %q", code, body)
	}
	if code, body := post(strings.NewReader(strings.Repeat("a", 1001))); code != 413 {
		t.Fatalf("1001 bytes declared: %d %q", code, body)
	}
	// No length: the body is cut where it passes the limit.
	pr, pw := io.Pipe()
	go func() {
		for range 10 {
			if _, err := pw.Write(make([]byte, 500)); err != nil {
				return
			}
		}
		pw.Close()
	}()
	if code, body := post(pr); code != 413 && code != 0 {
		t.Fatalf("5000 bytes streamed: %d %q", code, body)
	}
	// Go's client reads the advertised SETTINGS_MAX_HEADER_LIST_SIZE and
	// does not even send; curl sends, and gets 431.
	if code, msg := post(strings.NewReader("x"), "X-Big", strings.Repeat("b", 5000)); code != 0 || !strings.Contains(msg, "advertised limit") {
		t.Fatalf("a 5000-byte header from Go's client: %d %q", code, msg)
	}
	// (A single field longer than the limit is an HPACK error of the
	// whole connection for Go's server; three of 2,000 bytes are a 431.)
	curl := requireTool(t, "curl")
	out, err := exec.Command(curl, "-sS", "--max-time", "10", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
		"-H", "X-Big1: "+strings.Repeat("b", 2000), "-H", "X-Big2: "+strings.Repeat("b", 2000), "-H", "X-Big3: "+strings.Repeat("b", 2000),
		"http://"+in.proxy+"/").CombinedOutput()
	if err != nil || string(out) != "2 431" {
		t.Fatalf("6,000 bytes of header from curl: %v %q", err, out)
	}
	if got.Load() > 2000 {
		t.Fatalf("the backend read %d body bytes", got.Load())
	}
}

// TestHTTP2DelayedStreamThatLeavesIsNotCharged: a request waiting for its
// token (delay) whose client resets the stream, its connection still open,
// gets its token back, as an HTTP/1.1 client that closes its connection.
func TestHTTP2DelayedStreamThatLeavesIsNotCharged(t *testing.T) {
	in := startDelayed(t)
	c := h2cClient() // one connection for all three
	get := func(ctx context.Context) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+in.proxy+"/", nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	start := time.Now()
	if code, err := get(context.Background()); code != 200 {
		t.Fatalf("first: %d %v", code, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := get(ctx) // waits for its token, then its stream is reset
	cancel()
	if err == nil {
		t.Fatal("the delayed request did not wait")
	}
	time.Sleep(time.Until(start.Add(600 * time.Millisecond)))
	t0 := time.Now()
	if code, err := get(context.Background()); code != 200 || time.Since(t0) > 100*time.Millisecond {
		t.Fatalf("after the waiting stream left: %d %v in %v, want 200 at once (its token was given back)", code, err, time.Since(t0))
	}
	waitFor(t, "client_gone counted", func() bool {
		m, _ := in.scrape(t)
		return m[`equalizer_requests_total{outcome="client_gone"}`] == 1
	})
}

// TestHTTP1ClientGetsH2CTrailers: an h2c backend's trailers reach an
// HTTP/1.1 client as the trailer section of a chunked body (gRPC announces
// none, so neither does this backend).
func TestHTTP1ClientGetsH2CTrailers(t *testing.T) {
	backend := h2cBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "body") //nolint:errcheck
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"X-Checksum", "abc123")
	})
	in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend})
	req, _ := http.NewRequest("GET", "http://"+in.proxy+"/", nil)
	req.Header.Set("TE", "trailers")
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 1 || string(body) != "body" || resp.Trailer.Get("X-Checksum") != "abc123" {
		t.Fatalf("%s %q trailer %v", resp.Proto, body, resp.Trailer)
	}
}

// TestHTTP2BackendBodyCutResetsTheStream: a backend whose body stops short
// (the connection drops inside a chunked body or before its Content-Length,
// or an h2c backend resets its stream) must not look like a whole answer
// to an HTTP/2 client: the stream is reset, as nginx and HAProxy do.
func TestHTTP2BackendBodyCutResetsTheStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // a raw HTTP/1.1 backend that drops the connection mid-body
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				piece := strings.Repeat("x", 1000)
				if strings.Contains(string(buf[:n]), "/chunked") {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") //nolint:errcheck
					for range 100 {
						fmt.Fprintf(c, "%x\r\n%s\r\n", len(piece), piece)
					}
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n") //nolint:errcheck
				for range 100 {
					io.WriteString(c, piece) //nolint:errcheck
				}
			}()
		}
	}()
	h2c := h2cBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("y", 100000)) //nolint:errcheck
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // RST_STREAM
	})
	cut := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": "http://" + ln.Addr().String(), "EQUALIZER_HEALTH_INTERVAL": "1h"})
	reset := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": h2c, "EQUALIZER_HEALTH_INTERVAL": "1h"})
	for _, url := range []string{"http://" + cut.proxy + "/chunked", "http://" + cut.proxy + "/length", "http://" + reset.proxy + "/"} {
		resp, err := h2cClient().Get(url)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err == nil {
			t.Fatalf("%s: %d, %d bytes read to a clean end; want the stream reset", url, resp.StatusCode, n)
		}
	}
}
