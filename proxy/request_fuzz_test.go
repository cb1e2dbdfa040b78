package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzRequestHeaders sends requests with random header names, values, name
// case and line ends through the proxy to a backend that checks what it
// receives: forwarding fields exactly once and ours, no hop-by-hop field,
// only valid names. The proxy must answer every request: the backend's 200,
// or a 400 it gives itself, never a 502 and never silence.
func FuzzRequestHeaders(f *testing.F) {
	seeds := []struct {
		name, value string
		caseMask    uint8
		eol         uint8
	}{
		{"X-Test", "1", 0, 0}, {"x a", "1", 0, 0}, {"x-forwarded-for", "6.6.6.6", 0xff, 0},
		{"X-FORWARDED-PROTO", "https", 0x0f, 1}, {"connection", "x-secret", 0, 2}, {"TE", "trailers", 0, 0},
		{"X-Client", "a\tb", 0, 1}, {"Keep-Alive", "", 0x55, 2}, {"", ":", 0, 0}, {"X\x00Y", "1", 0, 1},
	}
	for _, s := range seeds {
		f.Add(s.name, s.value, s.caseMask, s.eol)
	}
	problems := make(chan string, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	backend := &fasthttp.Server{
		DisableHeaderNamesNormalizing: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			if p := checkForwarded(&ctx.Request.Header); p != "" {
				select {
				case problems <- p:
				default:
				}
			}
		},
	}
	go backend.Serve(ln) //nolint:errcheck
	f.Cleanup(func() { _ = backend.Shutdown() })
	h := startProxyT(f, options{}, "http://"+ln.Addr().String())

	f.Fuzz(func(t *testing.T, name, value string, caseMask, eol uint8) {
		if strings.ContainsAny(name+value, "\r\n") {
			t.Skip("a line end inside the field makes another request, which the checks below do not describe")
		}
		ends := []string{"\r\n", "\n", "\r\n"}
		nl := ends[int(eol)%len(ends)]
		var req strings.Builder
		req.WriteString("GET /fuzz HTTP/1.1" + nl + "Host: h" + nl)
		req.WriteString(name + ": " + value + nl)
		req.WriteString(mixCase("X-Forwarded-Host", caseMask) + ": evil.example" + nl)
		req.WriteString(mixCase("X-Forwarded-Proto", caseMask>>1) + ": https" + nl)
		req.WriteString(mixCase("X-Forwarded-For", caseMask>>2) + ": 6.6.6.6" + nl)
		req.WriteString(mixCase("Keep-Alive", caseMask>>3) + ": timeout=1" + nl)
		req.WriteString(nl)

		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
		c.Write([]byte(req.String()))                  //nolint:errcheck
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer to %q: %v", req.String(), err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 && resp.StatusCode != 400 && resp.StatusCode != 431 {
			t.Fatalf("%q: status %d", req.String(), resp.StatusCode)
		}
		select {
		case p := <-problems:
			t.Fatalf("%q: backend saw %s", req.String(), p)
		default:
		}
	})
}

// mixCase upper- or lower-cases each letter of s by the bits of mask.
func mixCase(s string, mask uint8) string {
	b := []byte(s)
	for i, c := range b {
		if mask&(1<<(i%8)) != 0 {
			b[i] = bytes.ToLower([]byte{c})[0]
		} else {
			b[i] = bytes.ToUpper([]byte{c})[0]
		}
	}
	return string(b)
}

// checkForwarded returns what is wrong with a header the backend received.
func checkForwarded(h *fasthttp.RequestHeader) string {
	count := map[string]int{}
	var xff, proto, host string
	for k, v := range h.All() {
		if !isToken(k) {
			return fmt.Sprintf("invalid field name %q", k)
		}
		name := strings.ToLower(string(k))
		count[name]++
		switch name {
		case "x-forwarded-for":
			xff = string(v)
		case "x-forwarded-proto":
			proto = string(v)
		case "x-forwarded-host":
			host = string(v)
		case "connection", "keep-alive", "proxy-connection", "upgrade", "transfer-encoding", "proxy-authorization", "x-secret":
			return fmt.Sprintf("hop-by-hop field %q", k)
		}
	}
	switch {
	case count["x-forwarded-for"] != 1 || !strings.HasSuffix(xff, ", 127.0.0.1"):
		return fmt.Sprintf("X-Forwarded-For %d lines, last %q", count["x-forwarded-for"], xff)
	case count["x-forwarded-proto"] != 1 || proto != "http":
		return fmt.Sprintf("X-Forwarded-Proto %d lines, last %q", count["x-forwarded-proto"], proto)
	case count["x-forwarded-host"] != 1 || host != "h":
		return fmt.Sprintf("X-Forwarded-Host %d lines, last %q", count["x-forwarded-host"], host)
	}
	return ""
}
