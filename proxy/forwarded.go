package proxy

import (
	"net/netip"

	"github.com/valyala/fasthttp"
)

// setForwarded rewrites the X-Forwarded-* fields. Every X-Forwarded-For line
// the client sent, in any case, becomes one list with the peer appended.
// X-Forwarded-Proto and X-Forwarded-Host describe our own listener: a
// client's lines (any case, any number) are replaced by ours, unless the
// peer is a trusted proxy, whose values describe the hop in front of it.
func setForwarded(ctx *fasthttp.RequestCtx, f *fields, peer netip.Addr, trusted bool) {
	h := &ctx.Request.Header
	var buf [256]byte
	xff := buf[:0]
	if f.xffLines > 0 {
		// Copy first: f.xff may point into the lines about to be deleted.
		xff = append(append(xff, f.xff...), ", "...)
		deleteAll(h, nameXForwardedFor)
	}
	h.SetBytesKV(nameXForwardedFor, peer.AppendTo(xff))
	if trusted && f.xProtoHost > 0 {
		return
	}
	if f.xProtoHost > 0 {
		deleteAll(h, nameXForwardedProto)
		deleteAll(h, nameXForwardedHost)
	}
	if isTLS(ctx) {
		h.Set(fasthttp.HeaderXForwardedProto, "https")
	} else {
		h.Set(fasthttp.HeaderXForwardedProto, "http")
	}
	h.SetBytesV(fasthttp.HeaderXForwardedHost, h.Host())
}
