package proxy

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

func keyOf(t *testing.T, mode string, trusted []string, peer, xff, header string) string {
	t.Helper()
	k, err := ParseClientKey(mode, trusted, 128)
	if err != nil {
		t.Fatal(err)
	}
	var req fasthttp.Request
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	if header != "" {
		req.Header.Set("X-Api-Key", header)
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(peer), Port: 4000}, nil)
	key, err := k.Append(nil, &ctx)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(key)
}

func TestClientKey(t *testing.T) {
	trusted := []string{"10.0.0.0/8", "fd00::/8", "192.0.2.1"}
	f := func(mode string, trusted []string, peer, xff, header, want string) {
		t.Helper()
		if got := keyOf(t, mode, trusted, peer, xff, header); got != want {
			t.Errorf("%s peer=%s xff=%q header=%q: key %q, want %q", mode, peer, xff, header, got, want)
		}
	}
	f("ip", nil, "203.0.113.9", "", "", "203.0.113.9")
	f("ip", nil, "::1", "", "", "::1")
	f("ip", nil, "::ffff:198.51.100.1", "", "", "198.51.100.1")
	// An untrusted peer's X-Forwarded-For is ignored.
	f("ip", nil, "203.0.113.9", "1.2.3.4", "", "203.0.113.9")
	f("ip", trusted, "203.0.113.9", "1.2.3.4", "", "203.0.113.9")
	// A trusted peer: the right-most address that is not a trusted proxy.
	f("ip", trusted, "10.1.1.1", "1.2.3.4", "", "1.2.3.4")
	f("ip", trusted, "10.1.1.1", "6.6.6.6, 1.2.3.4, 10.9.9.9", "", "1.2.3.4")
	f("ip", trusted, "192.0.2.1", "2001:db8::5,fd00::1", "", "2001:db8::5")
	f("ip", trusted, "10.1.1.1", "10.2.2.2", "", "10.2.2.2")          // all trusted: the left-most
	f("ip", trusted, "10.1.1.1", "garbage, 10.2.2.2", "", "10.2.2.2") // broken hop: stop at it
	f("ip", trusted, "10.1.1.1", "", "", "10.1.1.1")
	// Header mode, with the IP as fall-back.
	f("header:X-Api-Key", nil, "203.0.113.9", "", "key-42", "key-42")
	f("header:X-Api-Key", nil, "203.0.113.9", "", "", "203.0.113.9")
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'a'
	}
	f("header:X-Api-Key", nil, "203.0.113.9", "", string(long), "error: "+errKeyTooLong.Error())

	for _, bad := range []string{"", "IP", "header:", "header:bad name", "cookie:x"} {
		if _, err := ParseClientKey(bad, nil, 128); err == nil {
			t.Errorf("ParseClientKey(%q) accepted", bad)
		}
	}
	if _, err := ParseClientKey("ip", []string{"10.0.0.0/33"}, 128); err == nil {
		t.Errorf("bad CIDR accepted")
	}
}
