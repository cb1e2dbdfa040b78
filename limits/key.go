package limits

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/valyala/fasthttp"
)

// MaxKeyLen bounds a key: longer header, cookie or query values are keyed
// by the client's address instead.
const MaxKeyLen = 256

// Key is how a limit keys a request: ip, header:<Name>, cookie:<name>,
// query:<name>, or several joined with "+" (ip+header:X-Api-Key). A request
// that lacks one of the named parts, or whose part is empty or too long, is
// keyed by its address alone: never one bucket shared by all of them.
type Key struct {
	parts []keyPart
}

type keyKind uint8

const (
	partIP keyKind = iota
	partHeader
	partCookie
	partQuery
)

type keyPart struct {
	kind keyKind
	name []byte
}

// ParseKey reads a key recipe.
func ParseKey(s string) (*Key, error) {
	k := &Key{}
	for _, p := range strings.Split(s, "+") {
		p = strings.TrimSpace(p)
		kind, name, _ := strings.Cut(p, ":")
		switch {
		case p == "ip":
			k.parts = append(k.parts, keyPart{kind: partIP})
		case kind == "header" && ValidHeaderName(name):
			k.parts = append(k.parts, keyPart{kind: partHeader, name: []byte(name)})
		case kind == "cookie" && ValidHeaderName(name): // a cookie name is a token too
			k.parts = append(k.parts, keyPart{kind: partCookie, name: []byte(name)})
		case kind == "query" && name != "":
			k.parts = append(k.parts, keyPart{kind: partQuery, name: []byte(name)})
		default:
			return nil, fmt.Errorf("%q: want ip, header:<Name>, cookie:<name>, query:<name>, or several joined with +", s)
		}
	}
	return k, nil
}

// Append appends req's key to dst; ip is the client's address as the
// limit "default" keys it (trusted proxies and the IPv6 prefix applied).
// It allocates nothing.
func (k *Key) Append(dst []byte, req *fasthttp.Request, ip []byte) []byte {
	start := len(dst)
	for i, p := range k.parts {
		if i > 0 {
			dst = append(dst, '|')
		}
		if p.kind == partIP {
			dst = append(dst, ip...)
			continue
		}
		v := p.value(req)
		if len(v) == 0 || len(dst)+len(v) > start+MaxKeyLen {
			return append(dst[:start], ip...)
		}
		// The part's kind first, so a header value can never pose as an
		// address or as another part.
		dst = append(dst, "hcq"[p.kind-1])
		dst = append(dst, ':')
		dst = append(dst, v...)
	}
	return dst
}

func (p *keyPart) value(req *fasthttp.Request) []byte {
	switch p.kind {
	case partHeader:
		for name, value := range req.Header.All() {
			if bytes.EqualFold(name, p.name) {
				return value
			}
		}
		return nil
	case partCookie:
		return req.Header.CookieBytes(p.name)
	default:
		return req.URI().QueryArgs().PeekBytes(p.name)
	}
}

// ValidHeaderName reports whether s can be a header field name (an RFC
// 9110 token).
func ValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
