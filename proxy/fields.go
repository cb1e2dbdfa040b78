package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Header names are matched case-insensitively everywhere (RFC 9110 5.1),
// while the proxy forwards the names as the client spelled them; fasthttp's
// Peek and Del match the exact spelling once normalizing is off, so every
// lookup that matters for security goes through one pass over the header
// section here. Trailer fields are not part of that section: a field sent
// only as a trailer never becomes a header or a key.

var (
	nameXForwardedFor   = []byte(fasthttp.HeaderXForwardedFor)
	nameXForwardedProto = []byte(fasthttp.HeaderXForwardedProto)
	nameXForwardedHost  = []byte(fasthttp.HeaderXForwardedHost)
	nameUpgrade         = []byte(fasthttp.HeaderUpgrade)
)

// fields is what one pass over a request's header section found. It points
// into the header: it is valid until the header is changed.
type fields struct {
	badName []byte // first name that is not an RFC 9110 token
	// xff is every X-Forwarded-For line, in any case, joined in order. With
	// one line it is that line's value, in the header's storage.
	xff        []byte
	xffLines   int
	xProtoHost int // X-Forwarded-Proto and X-Forwarded-Host lines
	key        []byte
	keyLines   int // lines of the key header (header:<Name> mode)
	reqID      []byte
	reqIDLines int // lines of the request ID header
	// upgrade is the Upgrade field; connectionUpgrade is set when a
	// Connection line has the upgrade option: together they ask for a tunnel.
	upgrade           []byte
	connectionUpgrade bool
}

// readFields scans h once. keyName is the key header, idName the request
// ID header, each possibly empty. Only a request with several
// X-Forwarded-For lines allocates, to join them.
func readFields(h *fasthttp.RequestHeader, keyName, idName []byte) fields {
	var f fields
	for k, v := range h.All() {
		if f.badName == nil && !isToken(k) {
			f.badName = k
		}
		if len(keyName) > 0 && bytes.EqualFold(k, keyName) {
			f.keyLines++
			if f.keyLines == 1 {
				f.key = v
			}
		}
		if len(idName) > 0 && len(k) == len(idName) && bytes.EqualFold(k, idName) {
			f.reqIDLines++
			if f.reqIDLines == 1 {
				f.reqID = bytes.TrimSpace(v)
			}
		}
		switch {
		case len(k) == len("Upgrade") && k[0]|0x20 == 'u' && bytes.EqualFold(k, nameUpgrade):
			f.upgrade = bytes.TrimSpace(v)
		case len(k) == len("Connection") && k[0]|0x20 == 'c' && bytes.EqualFold(k, nameConnection):
			f.connectionUpgrade = f.connectionUpgrade || containsToken(v, "upgrade")
		}
		// Cheap filter first: most names do not start with x-forwarded-.
		if len(k) < len("X-Forwarded-For") || k[0]|0x20 != 'x' || k[1] != '-' {
			continue
		}
		switch {
		case bytes.EqualFold(k, nameXForwardedFor):
			v = bytes.TrimSpace(v)
			if f.xffLines == 0 {
				f.xff = v
			} else {
				f.xff = append(append(append(make([]byte, 0, len(f.xff)+2+len(v)), f.xff...), ", "...), v...)
			}
			f.xffLines++
		case bytes.EqualFold(k, nameXForwardedProto), bytes.EqualFold(k, nameXForwardedHost):
			f.xProtoHost++
		}
	}
	return f
}

// deleteAll removes every line of the named field, whatever its case.
// Each DelBytes removes one spelling, so it repeats until none is left;
// the spelling is copied first because deleting reshuffles the storage.
func deleteAll(h *fasthttp.RequestHeader, name []byte) {
	var buf [64]byte
	for {
		var found []byte
		for k := range h.All() {
			if bytes.EqualFold(k, name) {
				found = append(buf[:0], k...)
				break
			}
		}
		if found == nil {
			return
		}
		h.DelBytes(found)
	}
}

// isToken reports whether name is an RFC 9110 token: no spaces, no
// separators, no control bytes. HAProxy and nginx answer 400 to others.
func isToken(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

var tokenChars = charTable("!#$%&'*+-.^_`|~")

// charTable marks letters, digits and the extra bytes.
func charTable(extra string) (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for i := range len(extra) {
		t[extra[i]] = true
	}
	return t
}
