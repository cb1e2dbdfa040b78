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
// rewritten by toUpstream) and writes the answer to w; it returns the body
// bytes sent. On failure it leaves the proxy's answer in ctx and returns -1.
func (p *Proxy) forwardH2overH1(w http.ResponseWriter, r *http.Request, ctx *fasthttp.RequestCtx, x *exchange, b *pool.Backend) int64 {
	req := &ctx.Request
	if r.ContentLength != 0 {
		req.SetBodyStream(x.bodyIn, int(r.ContentLength))
	}
	req.UseHostHeader = true
	req.Header.SetProtocolBytes(http11)
	b, waited, err := p.forward(ctx, x, b)
	req.Header.SetProtocol("HTTP/2.0")
	x.backend, x.upstream = b, waited
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			x.answer(ctx, BodyTooLarge, "request body too large\n", fasthttp.StatusRequestEntityTooLarge)
			return -1
		}
		p.fail(ctx, x, err)
		return -1
	}
	resp := &ctx.Response
	stream := resp.BodyStream()
	if up, ok := stream.(*upstream.Upgraded); ok { // nobody asked: HTTP/2 has no Upgrade
		_ = up.Close()
		resp.ResetBody()
		b.Stats.Rejected()
		p.fail(ctx, x, errWrongUpgrade)
		return -1
	}
	x.outcome = Forwarded
	stripResponse(&resp.Header)
	if p.ids != nil {
		p.ids.reply(ctx, x)
	}
	if p.cfg.RateLimitHeaders && x.charged {
		setLimitFields(&resp.Header, x, x.route)
	}
	out := w.Header()
	copyResponseHeader(out, &resp.Header)
	status := resp.StatusCode()
	if stream == nil {
		body := resp.Body()
		if cl := resp.Header.ContentLength(); r.Method == http.MethodHead && cl >= 0 {
			out.Set(fasthttp.HeaderContentLength, strconv.Itoa(cl))
		} else if len(body) > 0 || status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified {
			out.Set(fasthttp.HeaderContentLength, strconv.Itoa(len(body)))
		}
		w.WriteHeader(status)
		n, _ := w.Write(body)
		return int64(n)
	}
	w.WriteHeader(status)
	var rc *http.ResponseController
	if cl := resp.Header.ContentLength(); cl < 0 || cl > upstream.SmallBody {
		rc = http.NewResponseController(w)
	}
	sent, err := copyFlushing(w, stream, rc)
	if ub, ok := stream.(*upstream.Body); ok {
		_ = ub.Release(err) // the connection is reused only after a clean end
	}
	resp.ResetBody()
	return sent
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

// fieldName is k as a string, without allocating for the usual names.
func fieldName(k []byte) string {
	switch string(k) {
	case fasthttp.HeaderContentType:
		return fasthttp.HeaderContentType
	case fasthttp.HeaderContentLength:
		return fasthttp.HeaderContentLength
	case fasthttp.HeaderDate:
		return fasthttp.HeaderDate
	case fasthttp.HeaderServer:
		return fasthttp.HeaderServer
	case fasthttp.HeaderCacheControl:
		return fasthttp.HeaderCacheControl
	case fasthttp.HeaderSetCookie:
		return fasthttp.HeaderSetCookie
	case fasthttp.HeaderContentEncoding:
		return fasthttp.HeaderContentEncoding
	case fasthttp.HeaderLastModified:
		return fasthttp.HeaderLastModified
	case fasthttp.HeaderETag:
		return fasthttp.HeaderETag
	case fasthttp.HeaderVary:
		return fasthttp.HeaderVary
	}
	return string(k)
}
