package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// MaxKeyLen is the longest client key, the same bound as an admin client_id.
const MaxKeyLen = 256

var errKeyTooLong = errors.New("client key header is longer than 256 bytes")

// ClientKey derives the key of a request's token bucket. It is immutable
// after ParseClientKey and safe for concurrent use.
type ClientKey struct {
	header  string         // header name in header:<Name> mode
	trusted []netip.Prefix // peers whose X-Forwarded-For is believed
}

// ParseClientKey parses EQUALIZER_CLIENT_KEY ("ip" or "header:<Name>") and
// the EQUALIZER_TRUSTED_PROXIES CIDRs.
func ParseClientKey(mode string, trustedCIDRs []string) (ClientKey, error) {
	var k ClientKey
	switch {
	case mode == "ip":
	case strings.HasPrefix(mode, "header:") && validHeaderName(mode[len("header:"):]):
		k.header = mode[len("header:"):]
	default:
		return k, fmt.Errorf("%q is neither ip nor header:<Name>", mode)
	}
	for _, c := range trustedCIDRs {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return k, fmt.Errorf("%q is not a CIDR", c)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		k.trusted = append(k.trusted, p.Masked())
	}
	return k, nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// Append appends the key of ctx's client to dst. In header mode a request
// without the header is keyed by its IP, so it is still limited.
func (k *ClientKey) Append(dst []byte, ctx *fasthttp.RequestCtx) ([]byte, error) {
	if k.header != "" {
		if v := ctx.Request.Header.Peek(k.header); len(v) > 0 {
			if len(v) > MaxKeyLen {
				return dst, errKeyTooLong
			}
			return append(dst, v...), nil
		}
	}
	return k.clientIP(ctx).AppendTo(dst), nil
}

// peerAddr is the socket peer as a netip.Addr, IPv4 unmapped, zone dropped.
func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	var ip net.IP
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		ip = a.IP
	} else {
		ip = ctx.RemoteIP()
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap().WithZone("")
}

// clientIP is the peer, or, when the peer is a trusted proxy, the right-most
// address of X-Forwarded-For that is not itself a trusted proxy.
func (k *ClientKey) clientIP(ctx *fasthttp.RequestCtx) netip.Addr {
	addr := peerAddr(ctx)
	if len(k.trusted) == 0 || !k.isTrusted(addr) {
		return addr
	}
	xff := ctx.Request.Header.Peek(fasthttp.HeaderXForwardedFor)
	for len(xff) > 0 {
		i := bytes.LastIndexByte(xff, ',')
		hop := bytes.TrimSpace(xff[i+1:])
		xff = xff[:max(i, 0)]
		a, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(hop), len(hop)))
		if err != nil {
			return addr // a forged or broken hop: keep the last address we trust
		}
		addr = a.Unmap().WithZone("")
		if !k.isTrusted(addr) {
			return addr
		}
	}
	return addr
}

func (k *ClientKey) isTrusted(a netip.Addr) bool {
	for _, p := range k.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
