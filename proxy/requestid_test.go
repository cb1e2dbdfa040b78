package proxy

import (
	"regexp"
	"strings"
	"testing"

	"gopher-equalizer/limiter"
)

func TestRequestIDs(t *testing.T) {
	url, got := startBackend(t, nil)
	lim := limiter.New(limiter.Config{Capacity: 7, RatePerSec: 1e-6}, limiter.NewMemoryStore())
	h := startProxy(t, options{lim: lim, reqID: "X-Request-ID"}, url)
	generated := regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{16}$`)
	send := func(head string) (string, []string) {
		t.Helper()
		resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\n"+head+"\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("%q: %d", head, resp.StatusCode)
		}
		s := recv(t, got)
		var up []string
		for k, v := range s.header {
			if strings.EqualFold(k, "X-Request-ID") {
				up = append(up, v...)
			}
		}
		return resp.Header.Get("X-Request-ID"), up
	}
	// None sent: one is made, the same both ways, new for each request.
	first, up := send("")
	if !generated.MatchString(first) || len(up) != 1 || up[0] != first {
		t.Fatalf("made ID %q, upstream %q", first, up)
	}
	second, _ := send("")
	if second == first || second[:17] != first[:17] {
		t.Fatalf("two requests: %q and %q (same prefix, other counter expected)", first, second)
	}
	// A sane one is kept, in any case of the name.
	if id, up := send("x-request-id: 7f1c9a2e-4b1d-4e7a-9c3b-2d5e6f708192\r\n"); id != "7f1c9a2e-4b1d-4e7a-9c3b-2d5e6f708192" || len(up) != 1 || up[0] != id {
		t.Fatalf("client's ID: answered %q, upstream %q", id, up)
	}
	// Hostile or ambiguous ones are replaced, every line of them.
	for _, head := range []string{
		"X-Request-ID: has space\r\n",
		"X-Request-ID: <script>\r\n",
		"X-Request-ID: " + strings.Repeat("a", 129) + "\r\n",
		"X-Request-ID: a\r\nx-request-id: b\r\n",
	} {
		id, up := send(head)
		if !generated.MatchString(id) || len(up) != 1 || up[0] != id {
			t.Fatalf("%q: answered %q, upstream %q", head, id, up)
		}
	}
	// The proxy's own answers carry one too.
	resp, _ := raw(t, h.addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Request-ID: mine\r\n\r\n")
	if resp.StatusCode != 429 || resp.Header.Get("X-Request-ID") != "mine" {
		t.Fatalf("429: %d with ID %q", resp.StatusCode, resp.Header.Get("X-Request-ID"))
	}
}
