package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// hopHeaders are meaningful for one connection only (RFC 9110 section 7.6.1)
// and never forwarded, in either direction. TE is handled apart: "trailers"
// may pass.
var hopHeaders = []string{
	fasthttp.HeaderConnection,
	"Keep-Alive",
	"Proxy-Connection",
	fasthttp.HeaderProxyAuthenticate,
	fasthttp.HeaderProxyAuthorization,
	fasthttp.HeaderTrailer,
	fasthttp.HeaderTransferEncoding,
	fasthttp.HeaderUpgrade,
}

// connectionTokens copies the Connection header's value into buf: deleting
// the headers it names reshuffles the header storage it points into.
// It returns a nil list when there is no Connection header; the first
// result is only there to start the caller's loop.
func connectionTokens(buf *[256]byte, v []byte) (_, list []byte) {
	switch {
	case len(v) == 0:
		return nil, nil
	case len(v) > len(buf):
		return nil, bytes.Clone(v)
	}
	return nil, append(buf[:0], v...)
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

// namesHeader reports whether a Connection token names a header to delete
// (close and keep-alive are options, not header names).
func namesHeader(tok []byte) bool {
	return len(tok) > 0 && !bytes.EqualFold(tok, []byte("close")) && !bytes.EqualFold(tok, []byte("keep-alive"))
}

// stripRequest removes hop-by-hop headers from a request about to go
// upstream. The upstream connection is kept alive whatever the client said:
// the server already noted the client's own Connection: close.
func stripRequest(h *fasthttp.RequestHeader) {
	var buf [256]byte
	for tok, rest := connectionTokens(&buf, h.Peek(fasthttp.HeaderConnection)); rest != nil; {
		if tok, rest = nextToken(rest); namesHeader(tok) {
			h.DelBytes(tok)
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	if te := h.Peek(fasthttp.HeaderTE); len(te) > 0 {
		if containsToken(te, "trailers") {
			h.Set(fasthttp.HeaderTE, "trailers")
		} else {
			h.Del(fasthttp.HeaderTE)
		}
	}
	h.ResetConnectionClose()
}

// stripResponse removes hop-by-hop headers from a backend's response. The
// server decides on its own whether the client connection stays open.
func stripResponse(h *fasthttp.ResponseHeader) {
	var buf [256]byte
	for tok, rest := connectionTokens(&buf, h.Peek(fasthttp.HeaderConnection)); rest != nil; {
		if tok, rest = nextToken(rest); namesHeader(tok) {
			h.DelBytes(tok)
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	h.Del(fasthttp.HeaderTE)
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
