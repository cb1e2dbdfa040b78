package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"gopher-equalizer/limits"
	"net"
	"net/netip"
	"strings"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// MaxKeyLen is the longest client key, the same bound as an admin client_id.
const MaxKeyLen = 256

var (
	errKeyTooLong   = errors.New("client key header is longer than 256 bytes")
	errKeyAmbiguous = errors.New("client key header appears more than once")
)

// ClientKey derives the key of a request's token bucket. It is immutable
// after ParseClientKey and safe for concurrent use.
type ClientKey struct {
	header  []byte         // header name in header:<Name> mode
	trusted []netip.Prefix // peers whose X-Forwarded-For is believed
	// ipv6Prefix keys IPv6 clients by their network: one host of a /64
	// has 2^64 addresses, so keying by the address would let it reset its
	// own limit at will.
	ipv6Prefix int
}

// ParseClientKey parses EQUALIZER_CLIENT_KEY ("ip" or "header:<Name>"), the
// EQUALIZER_TRUSTED_PROXIES CIDRs and EQUALIZER_IPV6_PREFIX (1..128).
func ParseClientKey(mode string, trustedCIDRs []string, ipv6Prefix int) (ClientKey, error) {
	k := ClientKey{ipv6Prefix: ipv6Prefix}
	if ipv6Prefix < 1 || ipv6Prefix > 128 {
		return k, fmt.Errorf("IPv6 prefix %d is not between 1 and 128", ipv6Prefix)
	}
	switch {
	case mode == "ip":
	case strings.HasPrefix(mode, "header:") && validHeaderName(mode[len("header:"):]):
		k.header = []byte(mode[len("header:"):])
	default:
		return k, fmt.Errorf("%q is neither ip nor header:<Name>", mode)
	}
	for _, c := range trustedCIDRs {
		if strings.TrimSpace(c) == "" {
			continue
		}
		p, err := ParseCIDR(c)
		if err != nil {
			return k, fmt.Errorf("%q is not a CIDR", c)
		}
		k.trusted = append(k.trusted, p)
	}
	return k, nil
}

// ParseCIDR reads a CIDR or a single address, as client addresses are
// compared: an IPv4-mapped IPv6 range is the IPv4 range it maps
// (::ffff:10.0.0.0/104 is 10.0.0.0/8); a mapped range wider than the
// mapped space is refused.
func ParseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return p, fmt.Errorf("an IPv4-mapped prefix shorter than /96")
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// ValidHeaderName reports whether name can be a header field name.
func ValidHeaderName(name string) bool { return validHeaderName(name) }

func validHeaderName(name string) bool { return limits.ValidHeaderName(name) }

// Append appends the key of ctx's client to dst. It scans the header
// itself; the proxy's request path uses appendKey with its own scan.
func (k *ClientKey) Append(dst []byte, ctx *fasthttp.RequestCtx) ([]byte, error) {
	f := readFields(&ctx.Request.Header, k.header, nil)
	peer := peerAddr(ctx)
	return k.appendKey(dst, &f, peer, k.isTrusted(peer))
}

// appendKey appends the key given the header scan and the peer. In header
// mode a request without the header is keyed by its IP, so it is still
// limited; a request with the header twice is refused, as either line could
// be the one a proxy in front added.
func (k *ClientKey) appendKey(dst []byte, f *fields, peer netip.Addr, trusted bool) ([]byte, error) {
	switch {
	case f.keyLines > 1:
		return dst, errKeyAmbiguous
	case f.keyLines == 1 && len(f.key) > 0:
		if len(f.key) > MaxKeyLen {
			return dst, errKeyTooLong
		}
		return append(dst, f.key...), nil
	}
	addr := k.clientAddr(f, peer, trusted)
	if addr.Is6() && k.ipv6Prefix < 128 {
		p, _ := addr.Prefix(k.ipv6Prefix)
		return p.AppendTo(dst), nil
	}
	return addr.AppendTo(dst), nil
}

// String is the key as EQUALIZER_CLIENT_KEY writes it.
func (k *ClientKey) String() string {
	if k.header != nil {
		return "header:" + string(k.header)
	}
	return "ip"
}

// appendIP appends the client's address as the ip key has it (trusted
// proxies, and IPv6 cut to the prefix).
func (k *ClientKey) appendIP(dst []byte, f *fields, peer netip.Addr, trusted bool) []byte {
	addr := k.clientAddr(f, peer, trusted)
	if addr.Is6() && k.ipv6Prefix < 128 {
		p, _ := addr.Prefix(k.ipv6Prefix)
		return p.AppendTo(dst)
	}
	return addr.AppendTo(dst)
}

// clientAddr is the client's address: the peer, or behind a trusted proxy
// the rightmost untrusted X-Forwarded-For hop.
func (k *ClientKey) clientAddr(f *fields, peer netip.Addr, trusted bool) netip.Addr {
	if trusted {
		return k.rightmostUntrusted(peer, f.xff)
	}
	return peer
}

// denied reports whether addr is in one of cidrs.
func denied(cidrs []netip.Prefix, addr netip.Addr) bool {
	for _, c := range cidrs {
		if c.Contains(addr) {
			return true
		}
	}
	return false
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

// rightmostUntrusted walks X-Forwarded-For (every line, joined in order)
// from the right, starting at a trusted peer, and returns the first address
// that is not a trusted proxy: the client as the last trusted hop saw it.
func (k *ClientKey) rightmostUntrusted(peer netip.Addr, xff []byte) netip.Addr {
	addr := peer
	for len(xff) > 0 {
		i := bytes.LastIndexByte(xff, ',')
		hop := bytes.TrimSpace(xff[i+1:])
		xff = xff[:max(i, 0)]
		if len(hop) == 0 {
			continue // an empty list element (RFC 9110 5.6.1)
		}
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
	if len(k.trusted) == 0 {
		return false
	}
	for _, p := range k.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
