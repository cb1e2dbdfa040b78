package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Hop-by-hop fields are meaningful for one connection only (RFC 9110 7.6.1)
// and never forwarded, in either direction, whatever their case: HAProxy and
// Envoy send every name in lower case. Trailer is kept on requests, where it
// announces trailer fields that go upstream as trailers.

var (
	nameConnection = []byte(fasthttp.HeaderConnection)
	nameTE         = []byte(fasthttp.HeaderTE)
	nameTrailer    = []byte(fasthttp.HeaderTrailer)
	hopNames       = [][]byte{
		nameConnection, []byte("Keep-Alive"), []byte("Proxy-Connection"),
		[]byte(fasthttp.HeaderProxyAuthenticate), []byte(fasthttp.HeaderProxyAuthorization),
		nameTE, nameTrailer, []byte(fasthttp.HeaderTransferEncoding), []byte(fasthttp.HeaderUpgrade),
		// Expect: 100-continue was answered by our server already.
		[]byte(fasthttp.HeaderExpect),
	}
)

// isHop reports whether name is hop-by-hop in itself.
func isHop(name []byte, keepTrailer bool) bool {
	if len(name) < 2 {
		return false
	}
	switch name[0] | 0x20 {
	case 'c', 'e', 'k', 'p', 't', 'u':
	default:
		return false
	}
	for _, hop := range hopNames {
		if bytes.EqualFold(name, hop) {
			return !keepTrailer || !bytes.EqualFold(name, nameTrailer)
		}
	}
	return false
}

// stripRequestHop deletes the hop-by-hop fields of h and every field its
// Connection lines name. It reports whether TE asked for trailers. A
// request without such fields costs one pass over the header. (Request and
// response headers share no interface, and a generic version allocates.)
func stripRequestHop(h *fasthttp.RequestHeader, keepTrailer bool) (teTrailers bool) {
	var listBuf [256]byte
	list := listBuf[:0] // Connection tokens, copied: deleting reshuffles the storage
	found := false
	for k, v := range h.All() {
		if isHop(k, keepTrailer) {
			found = true
			list, teTrailers = noteHop(list, teTrailers, k, v)
		}
	}
	if !found {
		return false
	}
	var nameBuf [64]byte
	for range maxDeletePasses {
		var name []byte
		for k := range h.All() {
			if isHop(k, keepTrailer) || namedIn(list, k) {
				name = append(nameBuf[:0], k...)
				break
			}
		}
		if name == nil {
			break
		}
		h.DelBytes(name)
	}
	return teTrailers
}

// stripResponseHop is stripRequestHop for a response.
func stripResponseHop(h *fasthttp.ResponseHeader) {
	var listBuf [256]byte
	list := listBuf[:0]
	found := false
	for k, v := range h.All() {
		if isHop(k, true) {
			found = true
			list, _ = noteHop(list, false, k, v)
		}
	}
	if !found {
		return
	}
	var nameBuf [64]byte
	for range maxDeletePasses {
		var name []byte
		for k := range h.All() {
			if isHop(k, true) || namedIn(list, k) {
				name = append(nameBuf[:0], k...)
				break
			}
		}
		if name == nil {
			break
		}
		h.DelBytes(name)
	}
}

// maxDeletePasses bounds the passes of a strip: each deletes one spelling
// of one name, so a hostile header costs a bounded amount of work.
const maxDeletePasses = 64

// noteHop records what a hop-by-hop field says: the fields Connection names,
// and whether TE accepts trailers.
func noteHop(list []byte, teTrailers bool, k, v []byte) ([]byte, bool) {
	switch {
	case bytes.EqualFold(k, nameConnection):
		list = append(append(list, v...), ',')
	case bytes.EqualFold(k, nameTE):
		teTrailers = teTrailers || containsToken(v, "trailers")
	}
	return list, teTrailers
}

// namedIn reports whether the Connection token list names the field name
// (close and keep-alive are options, not field names).
func namedIn(list, name []byte) bool {
	for len(list) > 0 {
		var tok []byte
		tok, list = nextToken(list)
		if len(tok) > 0 && bytes.EqualFold(tok, name) {
			return !bytes.EqualFold(tok, []byte("close")) && !bytes.EqualFold(tok, []byte("keep-alive"))
		}
	}
	return false
}

// nextToken splits a comma-separated list; tok is trimmed and may be empty.
func nextToken(list []byte) (tok, rest []byte) {
	if i := bytes.IndexByte(list, ','); i >= 0 {
		tok, rest = list[:i], list[i+1:]
	} else {
		tok = list
	}
	return bytes.TrimSpace(tok), rest
}

// stripRequest removes hop-by-hop fields from a request about to go
// upstream; TE: trailers is the one TE value that passes. The upstream
// connection is kept alive whatever the client said: the server already
// noted the client's own Connection: close.
func stripRequest(h *fasthttp.RequestHeader) {
	// Trailer stays only on a chunked request, where it announces the
	// trailer fields that go upstream as trailers.
	if stripRequestHop(h, h.ContentLength() == -1) {
		h.Set(fasthttp.HeaderTE, "trailers")
	}
	h.ResetConnectionClose()
}

// stripResponse removes hop-by-hop fields from a backend's response. The
// server decides on its own whether the client connection stays open.
func stripResponse(h *fasthttp.ResponseHeader) {
	stripResponseHop(h)
	h.ResetConnectionClose()
}

func containsToken(v []byte, token string) bool {
	for tok, rest := nextToken(v); ; tok, rest = nextToken(rest) {
		if i := bytes.IndexByte(tok, ';'); i >= 0 {
			tok = bytes.TrimSpace(tok[:i])
		}
		if bytes.EqualFold(tok, []byte(token)) {
			return true
		}
		if rest == nil {
			return false
		}
	}
}
