package proxy

import (
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzClientIP feeds arbitrary X-Forwarded-For values from a trusted peer:
// the key must never panic and must always be a valid address.
func FuzzClientIP(f *testing.F) {
	for _, seed := range []string{"1.2.3.4", "6.6.6.6, 1.2.3.4, 10.9.9.9", "", ",,,", "garbage, 10.2.2.2", "2001:db8::5,fd00::1", "fe80::1%eth0"} {
		f.Add(seed)
	}
	k, err := ParseClientKey("ip", []string{"10.0.0.0/8", "fd00::/8"}, 128)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, xff string) {
		var req fasthttp.Request
		req.Header.Set("X-Forwarded-For", xff)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(10, 1, 1, 1), Port: 1}, nil)
		key, err := k.Append(nil, &ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a, err := netip.ParseAddr(string(key)); err != nil || a.Zone() != "" {
			t.Fatalf("key %q from X-Forwarded-For %q is not a plain address", key, xff)
		}
	})
}
