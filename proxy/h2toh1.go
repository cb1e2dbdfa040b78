package proxy

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/pool"
	"gopher-equalizer/upstream"
)

// An HTTP/2 client's request to an http:// backend goes over the same
// HostClient as an HTTP/1.1 client's (forward.go): the checked keep-alive
// connections, the retries, the backend timeout, early answers. Only its
// body comes from the HTTP/2 stream and its answer goes back to it.

// forwardH2overH1 forwards the request in ctx (its head adapted and
// rewritten by toUpstream) and writes the answer to w, the backend's or,
// when forwarding failed, the proxy's; it returns the body bytes sent and
// why reading the backend's body failed, if it did.
func (p *Proxy) forwardH2overH1(w http.ResponseWriter, r *http.Request, ctx *fasthttp.RequestCtx, x *exchange, b *pool.Backend) (int64, error) {
	req := &ctx.Request
	if r.ContentLength != 0 {
		req.SetBodyStream(x.bodyIn, int(r.ContentLength))
	}
	req.UseHostHeader = true
	req.Header.SetProtocolBytes(http11)
	b, waited, err := p.forward(ctx, x, b)
	req.Header.SetProtocol("HTTP/2.0")
	x.backend, x.upstream = b, waited
	resp := &ctx.Response
	stream := resp.BodyStream()
	if up, ok := stream.(*upstream.Upgraded); ok && err == nil { // nobody asked: HTTP/2 has no Upgrade
		_ = up.Close()
		resp.ResetBody()
		b.Stats.Rejected()
		err = errWrongUpgrade
	}
	if err != nil {
		p.fail(ctx, x, err)
		return p.answerH2(w, r, ctx, x), nil
	}
	x.outcome = Forwarded
	stripResponse(&resp.Header)
	p.replyFields(ctx, x)
	out := w.Header()
	copyResponseHeader(out, &resp.Header)
	if cl := resp.Header.ContentLength(); cl >= 0 { // also HEAD's, and a streamed body's
		out.Set(fasthttp.HeaderContentLength, strconv.Itoa(cl))
	}
	w.WriteHeader(resp.StatusCode())
	if stream == nil {
		n, _ := w.Write(resp.Body())
		return int64(n), nil
	}
	sent, readErr, writeErr := relayBody(w, stream, int64(resp.Header.ContentLength()))
	if ub, ok := stream.(*upstream.Body); ok {
		_ = ub.Release(errors.Join(readErr, writeErr)) // the connection is reused only after a clean end
	}
	resp.ResetBody()
	return sent, readErr
}

// copyResponseHeader copies a backend's response fields but Content-Length
// to an HTTP/2 response head: the values in one string and one slice, the
// usual names as constants, so that a head costs a few allocations, not
// three per field.
func copyResponseHeader(out http.Header, h *fasthttp.ResponseHeader) {
	n, size := 0, 0
	for _, v := range h.All() {
		n++
		size += len(v)
	}
	buf := make([]byte, 0, size)
	for _, v := range h.All() {
		buf = append(buf, v...)
	}
	all := string(buf)
	vals := make([]string, n)
	i, off := 0, 0
	for k, v := range h.All() {
		vals[i] = all[off : off+len(v)]
		off += len(v)
		name := fieldName(k)
		if name == fasthttp.HeaderContentLength {
			i++
			continue
		}
		if prev, ok := out[name]; ok {
			out[name] = append(prev, vals[i])
		} else {
			out[name] = vals[i : i+1 : i+1]
		}
		i++
	}
}

// commonFields are names fieldName returns without allocating.
var commonFields = []string{
	fasthttp.HeaderContentType, fasthttp.HeaderContentLength, fasthttp.HeaderDate, fasthttp.HeaderServer,
	fasthttp.HeaderCacheControl, fasthttp.HeaderSetCookie, fasthttp.HeaderContentEncoding,
	fasthttp.HeaderLastModified, fasthttp.HeaderETag, fasthttp.HeaderVary,
}

// fieldName is k as a string, without allocating for the usual names.
func fieldName(k []byte) string {
	for _, name := range commonFields {
		if string(k) == name {
			return name
		}
	}
	return string(k)
}
