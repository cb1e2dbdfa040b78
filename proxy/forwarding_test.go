package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/limiter"
)

// headerValues returns every value of name in the backend's view, matching
// the name case-insensitively as Go's Header.Get and Python do.
func headerValues(s seen, name string) []string {
	var out []string
	for k, v := range s.header {
		if strings.EqualFold(k, name) {
			out = append(out, v...)
		}
	}
	return out
}

func TestForgedForwardingHeadersNeverReachTheBackend(t *testing.T) {
	url, got := startBackend(t, nil)
	h := startProxy(t, options{}, url)
	raw(t, h.addr, "GET / HTTP/1.1\r\nHost: shop.test\r\n"+
		"x-forwarded-proto: https\r\nX-FORWARDED-HOST: evil.example\r\nX-Forwarded-Host: evil2.example\r\n"+
		"X-Forwarded-Proto: https\r\nx-forwarded-for: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n\r\n")
	s := recv(t, got)
	if v := headerValues(s, "X-Forwarded-Proto"); len(v) != 1 || v[0] != "http" {
		t.Errorf("X-Forwarded-Proto at the backend: %v", v)
	}
	if v := headerValues(s, "X-Forwarded-Host"); len(v) != 1 || v[0] != "shop.test" {
		t.Errorf("X-Forwarded-Host at the backend: %v", v)
	}
	// Every client line, in order, then the peer: one line.
	if v := headerValues(s, "X-Forwarded-For"); len(v) != 1 || v[0] != "6.6.6.6, 7.7.7.7, 127.0.0.1" {
		t.Errorf("X-Forwarded-For at the backend: %v", v)
	}
}

func TestTrustedProxyKeepsItsForwardingHeaders(t *testing.T) {
	url, got := startBackend(t, nil)
	// The IPv4-mapped form must match the IPv4 peer 127.0.0.1.
	h := startProxy(t, options{trusted: []string{"::ffff:127.0.0.1"}}, url)
	raw(t, h.addr, "GET / HTTP/1.1\r\nHost: shop.test\r\nx-forwarded-proto: https\r\nx-forwarded-host: www.shop.test\r\n\r\n")
	s := recv(t, got)
	if v := headerValues(s, "X-Forwarded-Proto"); len(v) != 1 || v[0] != "https" {
		t.Errorf("a trusted proxy's X-Forwarded-Proto was replaced: %v", v)
	}
	if v := headerValues(s, "X-Forwarded-Host"); len(v) != 1 || v[0] != "www.shop.test" {
		t.Errorf("a trusted proxy's X-Forwarded-Host was replaced: %v", v)
	}
}

func TestKeysBehindProxiesThatSendLowerCaseAndSeveralLines(t *testing.T) {
	url, got := startBackend(t, nil)
	// One token per client, no refill within the test: the second request
	// of a key is a 429, so a status tells which key was charged.
	newLim := func() *limiter.Limiter {
		return limiter.New(limiter.Config{Capacity: 1, RatePerSec: 0.001}, limiter.NewMemoryStore())
	}
	t.Run("ip via two X-Forwarded-For lines from a trusted peer", func(t *testing.T) {
		lim := newLim()
		h := startProxy(t, options{lim: lim, trusted: []string{"127.0.0.1/32"}}, url)
		// The client forged the first line; the proxy in front added the second.
		raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 198.51.100.7\r\n\r\n")
		recv(t, got)
		if _, ok := lim.Get("198.51.100.7", 0); !ok {
			t.Errorf("the key is not the address the trusted proxy added")
		}
		if _, ok := lim.Get("6.6.6.6", 0); ok {
			t.Errorf("the forged first line became the key")
		}
	})
	t.Run("header key in any case", func(t *testing.T) {
		lim := newLim()
		h := startProxy(t, options{lim: lim, key: "header:X-Client"}, url)
		for _, name := range []string{"x-client", "X-CLIENT", "X-Client"} {
			resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n"+name+": alice\r\n\r\n")
			if name == "x-client" {
				if resp.StatusCode != 200 {
					t.Fatalf("%s: %d", name, resp.StatusCode)
				}
				recv(t, got)
				continue
			}
			if resp.StatusCode != 429 {
				t.Errorf("%s: %d, want 429: the key was not matched case-insensitively", name, resp.StatusCode)
			}
		}
		if _, ok := lim.Get("127.0.0.1", 0); ok {
			t.Errorf("a request with the key header fell back to the peer address")
		}
	})
	t.Run("key header twice is ambiguous", func(t *testing.T) {
		lim := newLim()
		h := startProxy(t, options{lim: lim, key: "header:X-Client"}, url)
		resp, body := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Client: alice\r\nx-client: bob\r\n\r\n")
		if resp.StatusCode != 400 || !strings.Contains(body, "more than once") {
			t.Fatalf("got %d %q, want 400", resp.StatusCode, body)
		}
		if lim.Len() != 0 {
			t.Errorf("an ambiguous request was charged")
		}
	})
	t.Run("a trailer never becomes the key", func(t *testing.T) {
		lim := newLim()
		h := startProxy(t, options{lim: lim, key: "header:X-Client"}, url)
		resp, _ := raw(t, h.addr, "POST / HTTP/1.1\r\nHost: h\r\nTrailer: X-Client\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Client: mallory\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("got %d", resp.StatusCode)
		}
		s := recv(t, got)
		if _, ok := lim.Get("mallory", 0); ok {
			t.Errorf("a trailer field became the rate-limit key")
		}
		if v := s.header["X-Client"]; len(v) != 0 {
			t.Errorf("a trailer field reached the backend as a header: %v", s.header)
		}
	})
	t.Run("IPv6 clients keyed by prefix", func(t *testing.T) {
		k, err := ParseClientKey("ip", []string{"127.0.0.1"}, 64)
		if err != nil {
			t.Fatal(err)
		}
		f := fields{xff: []byte("2001:db8:1:2:aaaa::1"), xffLines: 1}
		key, _ := k.appendKey(nil, &f, mustAddr("127.0.0.1"), true)
		if string(key) != "2001:db8:1:2::/64" {
			t.Errorf("key %q, want the /64", key)
		}
		f = fields{xff: []byte("198.51.100.7"), xffLines: 1}
		if key, _ := k.appendKey(nil, &f, mustAddr("127.0.0.1"), true); string(key) != "198.51.100.7" {
			t.Errorf("IPv4 key %q", key)
		}
	})
}

func TestClientMistakesAreClientErrors(t *testing.T) {
	url, got := startBackend(t, nil)
	h := startProxy(t, options{}, url)
	b := h.pool.Backends()[0]
	// Absolute form, any scheme: forwarded in origin form with its host.
	for _, target := range []string{"https://evil.example/p?q=1", "http://shop.test/p?q=1", "ftp://shop.test/p?q=1"} {
		resp, _ := raw(t, h.addr, "GET "+target+" HTTP/1.1\r\nHost: ignored\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", target, resp.StatusCode)
		}
		s := recv(t, got)
		if s.uri != "/p?q=1" {
			t.Errorf("%s went upstream as %q", target, s.uri)
		}
		if want := strings.SplitN(strings.SplitN(target, "//", 2)[1], "/", 2)[0]; s.host != want {
			t.Errorf("%s: Host %q, want %q", target, s.host, want)
		}
	}
	// HTTP/1.0 without Host: forwarded as HTTP/1.1 with the backend's host.
	resp, _ := raw(t, h.addr, "GET /old HTTP/1.0\r\n\r\n")
	if resp.StatusCode != 200 || resp.ProtoMinor != 1 && resp.ProtoMajor != 1 {
		t.Fatalf("HTTP/1.0 without Host: %d", resp.StatusCode)
	}
	if s := recv(t, got); s.host != b.Addr {
		t.Errorf("HTTP/1.0 request went upstream with Host %q", s.host)
	}
	// An invalid header name is a 400 and never reaches the backend.
	resp, _ = raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nX A: 1\r\n\r\n")
	if resp.StatusCode != 400 {
		t.Errorf("header name with a space: %d, want 400", resp.StatusCode)
	}
	if b.Stats.FailuresTotal() != 0 {
		t.Errorf("client mistakes raised the backend failure counter to %d", b.Stats.FailuresTotal())
	}
	if len(got) != 0 {
		t.Errorf("a refused request reached the backend")
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestHopByHopHeadersInAnyCase(t *testing.T) {
	url, got := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Response.Header
		h.Set("connection", "x-resp-hop")
		h.Set("x-resp-hop", "1")
		h.Set("keep-alive", "timeout=5")
		h.Set("proxy-authenticate", "Basic")
	})
	h := startProxy(t, options{}, url)
	resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nconnection: keep-alive, x-secret\r\nX-SECRET: 1\r\n"+
		"keep-alive: timeout=5\r\nproxy-authorization: Basic Zm9v\r\nupgrade: websocket\r\nproxy-connection: keep-alive\r\nte: gzip\r\n\r\n")
	s := recv(t, got)
	for _, name := range []string{"Connection", "X-Secret", "Keep-Alive", "Proxy-Authorization", "Upgrade", "Proxy-Connection", "TE"} {
		if v := headerValues(s, name); len(v) != 0 {
			t.Errorf("request field %s reached the backend: %v", name, v)
		}
	}
	for _, name := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Values(name); len(v) != 0 {
			t.Errorf("response field %s reached the client: %v", name, v)
		}
	}
}

func TestBareLineFeedRequestsAreAnswered(t *testing.T) {
	url, got := startBackend(t, nil)
	h := startProxy(t, options{}, url)
	for _, req := range []string{
		"GET /lf HTTP/1.1\nHost: h\nX-Y: 1\n\n",
		"GET /mixed HTTP/1.1\r\nHost: h\r\nX-Y: 1\n\n",
		"GET /crlf-then-lf HTTP/1.1\r\nHost: h\r\n\n",
	} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("%q: no answer: %v", req, err)
		}
		if resp.StatusCode != 200 {
			t.Errorf("%q: %d", req, resp.StatusCode)
		}
		if s := recv(t, got); s.header["X-Y"] == nil && !strings.HasPrefix(s.uri, "/crlf") {
			t.Errorf("%q: header lost: %v", req, s.header)
		}
	}
}

// TestPipelinedBodyIsNotMendedLikeAHead: the head repair above applies to
// the bytes that start a request head, never to a body. Here the second
// request's head arrives with the first request, and the rest of its body,
// which starts with a blank line of bare line feeds, in a later read.
func TestPipelinedBodyIsNotMendedLikeAHead(t *testing.T) {
	url, got := startBackend(t, nil)
	h := startProxy(t, options{}, url)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	io.WriteString(c, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\nab")
	time.Sleep(100 * time.Millisecond) // the rest in a read of its own
	io.WriteString(c, "\n\ncdef")
	br := bufio.NewReader(c)
	for i := range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("answer %d: %v %v", i+1, resp, err)
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck
	}
	if s := recv(t, got); s.body != "hello" {
		t.Fatalf("first body %q", s.body)
	}
	if s := recv(t, got); s.body != "ab\n\ncdef" {
		t.Fatalf("second body %q, want %q", s.body, "ab\n\ncdef")
	}
}

// TestPipelinedRequestsInPieces: a client that pipelines (sends requests
// without waiting for answers) gets every answer, in order, whatever the
// pieces the bytes arrive in; bodies with Content-Length and chunked,
// holding line feeds and what looks like a request, arrive unchanged.
func TestPipelinedRequestsInPieces(t *testing.T) {
	url, _ := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(string(ctx.Method()) + " " + string(ctx.RequestURI()) + " " + string(ctx.PostBody()))
	})
	h := startProxy(t, options{}, url)
	bodies := []string{"", "plain", "a\n\nb", "\n\nGET /x HTTP/1.1\r\n\r\n", strings.Repeat("z\n", 3000)}
	var stream strings.Builder
	var want []string
	for i := range 20 {
		b := bodies[i%len(bodies)]
		switch {
		case b == "":
			fmt.Fprintf(&stream, "GET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
			want = append(want, fmt.Sprintf("GET /%d ", i))
		case i%2 == 0:
			fmt.Fprintf(&stream, "POST /%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", i, len(b), b)
			want = append(want, fmt.Sprintf("POST /%d %s", i, b))
		default:
			fmt.Fprintf(&stream, "POST /%d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", i, len(b), b)
			want = append(want, fmt.Sprintf("POST /%d %s", i, b))
		}
	}
	all := stream.String()
	for _, piece := range []int{1 << 20, 7, 64, 1000} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
		go func() {
			for rest := all; len(rest) > 0; {
				n := min(piece, len(rest))
				if _, err := io.WriteString(c, rest[:n]); err != nil {
					return
				}
				rest = rest[n:]
				if piece < 100 {
					time.Sleep(time.Millisecond / 10)
				}
			}
		}()
		br := bufio.NewReader(c)
		for i, w := range want {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("pieces of %d: answer %d: %v", piece, i, err)
			}
			got, _ := io.ReadAll(resp.Body)
			if string(got) != w {
				t.Fatalf("pieces of %d: answer %d = %q, want %q", piece, i, got, w)
			}
		}
		c.Close()
	}
}
