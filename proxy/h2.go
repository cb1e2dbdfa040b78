package proxy

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/upstream"
)

// The HTTP/2 adapter: Go's HTTP/2 server (h2front.go) hands each stream
// here as a net/http request. Its head is copied into a fasthttp request
// so that it takes the very steps an HTTP/1.1 request takes (admit,
// toUpstream); only carrying the bodies differs: they stream over
// net/http's client side (roundtrip.go), both ways at once, trailers
// included. The proxy's own answers become gRPC statuses for gRPC calls.

// HTTP2Handler serves the requests of HTTP/2 connections.
func (p *Proxy) HTTP2Handler() http.Handler { return h2Handler{p} }

type h2Handler struct{ p *Proxy }

// connKey finds the client connection in an HTTP/2 request's context.
type connKey struct{}

var ctxPool = sync.Pool{New: func() any { return new(fasthttp.RequestCtx) }}

func (h h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	ctx := ctxPool.Get().(*fasthttp.RequestCtx)
	defer func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctxPool.Put(ctx)
	}()
	ctx.Init2(conn, nil, false)
	ctx.Response.Header.SetNoDefaultContentType(true)
	adaptRequest(&ctx.Request, r)

	var x exchange
	x.streamDone = r.Context().Done()
	sent, broke := p.serveH2(w, r, ctx, &x)
	p.releaseHeld(&x)
	p.Stats.count(x.outcome)
	p.Stats.HTTP2.Add(1)
	if x.route != nil {
		x.route.Counts[x.outcome].Add(1)
	}
	if p.access != nil {
		p.access.write(ctx, &x, sent)
	}
	if broke != nil {
		// The backend's body ended early: reset the stream, so that the
		// client sees a cut answer (as nginx and HAProxy do), never a
		// whole one.
		panic(http.ErrAbortHandler)
	}
}

// adaptRequest copies an HTTP/2 request's head into req.
func adaptRequest(req *fasthttp.Request, r *http.Request) {
	h := &req.Header
	h.SetMethod(r.Method)
	h.SetRequestURI(r.RequestURI)
	h.SetProtocol("HTTP/2.0")
	h.SetHost(r.Host)
	for k, vs := range r.Header {
		if strings.EqualFold(k, fasthttp.HeaderContentLength) || strings.EqualFold(k, fasthttp.HeaderHost) {
			continue
		}
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	if r.ContentLength >= 0 {
		h.SetContentLength(int(r.ContentLength))
	} else {
		h.SetContentLength(-1)
	}
}

// serveH2 handles one HTTP/2 request; it returns the body bytes sent, and
// why reading the backend's body failed, if it did.
func (p *Proxy) serveH2(w http.ResponseWriter, r *http.Request, ctx *fasthttp.RequestCtx, x *exchange) (int64, error) {
	var c client
	b := p.admit(ctx, x, &c)
	if b == nil {
		return p.answerH2(w, r, ctx, x), nil
	}
	if p.cfg.MaxBodySize > 0 && r.ContentLength > p.cfg.MaxBodySize {
		x.answer(ctx, BodyTooLarge, "request body too large\n", fasthttp.StatusRequestEntityTooLarge)
		return p.answerH2(w, r, ctx, x), nil
	}
	p.toUpstream(ctx, x, &c)
	x.bodyIn = &requestBody{r: r.Body, max: p.cfg.MaxBodySize} // counted and bounded; no deadline: the connection is shared
	if !b.H2 && b.TLS == nil {
		return p.forwardH2overH1(w, r, ctx, x, b)
	}
	b, resp, err := p.roundTrip(r.Context(), ctx, x, b, x.bodyIn, r.ContentLength)
	x.backend = b
	if err != nil {
		p.fail(ctx, x, err)
		return p.answerH2(w, r, ctx, x), nil
	}
	x.outcome = Forwarded
	return p.relayResponse(w, ctx, x, resp)
}

// answerH2 sends the proxy's own answer, made in ctx's response: as is, or
// as a gRPC status to a gRPC call.
func (p *Proxy) answerH2(w http.ResponseWriter, r *http.Request, ctx *fasthttp.RequestCtx, x *exchange) int64 {
	p.replyFields(ctx, x)
	if isGRPC(r) {
		writeGRPCAnswer(w, ctx, x)
		return 0
	}
	return writeAnswer(w, ctx)
}

// replyFields adds the proxy's own fields to ctx's response: the request
// ID, and on a forwarded answer the RateLimit fields when
// EQUALIZER_RATELIMIT_HEADERS asks for them. (HTTP/1.1 sets them in
// ServeHTTP and serve.)
func (p *Proxy) replyFields(ctx *fasthttp.RequestCtx, x *exchange) {
	if p.ids != nil {
		p.ids.reply(ctx, x)
	}
	if x.outcome == Forwarded && p.cfg.RateLimitHeaders && x.charged {
		setLimitFields(&ctx.Response.Header, x, x.route)
	}
}

// relayResponse sends an h2c or https backend's response to the client:
// head, body, and trailers (gRPC servers announce none: each goes by the
// prefix that sends an undeclared one).
func (p *Proxy) relayResponse(w http.ResponseWriter, ctx *fasthttp.RequestCtx, x *exchange, resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	out := w.Header()
	for k, vs := range resp.Header {
		if !isHopName(k) {
			out[k] = vs
		}
	}
	ctx.Response.SetStatusCode(resp.StatusCode)
	p.replyFields(ctx, x)
	copyOwnFields(out, &ctx.Response.Header)
	w.WriteHeader(resp.StatusCode)
	sent, readErr, _ := relayBody(w, resp.Body, resp.ContentLength)
	for k, vs := range resp.Trailer {
		out[http.TrailerPrefix+k] = vs
	}
	return sent, readErr
}

// relayBody copies a response body of length cl (-1: unknown) to an HTTP/2
// client. A small body of known length is the whole answer: it goes out
// with the end of the handler, in as few frames and writes as the
// connection's other streams allow. Any other is flushed after each read,
// so that a stream's messages (gRPC) go out as they come.
// It returns the bytes sent and the error of the reads or of the writes.
func relayBody(w http.ResponseWriter, body io.Reader, cl int64) (sent int64, readErr, writeErr error) {
	var rc *http.ResponseController
	if cl < 0 || cl > upstream.SmallBody {
		rc = http.NewResponseController(w)
	}
	return copyFlushing(w, body, rc)
}

// copyOwnFields adds the fields the proxy set on ctx's response (request
// ID, RateLimit) to an HTTP/2 response head.
func copyOwnFields(out http.Header, h *fasthttp.ResponseHeader) {
	for k, v := range h.All() {
		switch string(k) {
		case fasthttp.HeaderContentType, fasthttp.HeaderContentLength, fasthttp.HeaderServer, fasthttp.HeaderDate:
			continue
		}
		out.Set(string(k), string(v))
	}
}

var copyFlushBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyFlushing copies body to w, flushing after each read when rc is set.
// A read that fails is the backend's doing, a write the client's: they
// come back apart.
func copyFlushing(w io.Writer, body io.Reader, rc *http.ResponseController) (sent int64, readErr, writeErr error) {
	bp := copyFlushBufs.Get().(*[]byte)
	defer copyFlushBufs.Put(bp)
	for {
		n, err := body.Read(*bp)
		if n > 0 {
			m, werr := w.Write((*bp)[:n])
			sent += int64(m)
			if werr != nil {
				return sent, nil, werr
			}
			if rc != nil {
				if ferr := rc.Flush(); ferr != nil {
					return sent, nil, ferr
				}
			}
		}
		if err == io.EOF {
			return sent, nil, nil
		}
		if err != nil {
			return sent, err, nil
		}
	}
}

// writeAnswer sends the proxy's own answer, made in ctx's response.
func writeAnswer(w http.ResponseWriter, ctx *fasthttp.RequestCtx) int64 {
	resp := &ctx.Response
	out := w.Header()
	copyOwnFields(out, &resp.Header)
	if ct := resp.Header.ContentType(); len(ct) > 0 {
		out.Set(fasthttp.HeaderContentType, string(ct))
	}
	body := resp.Body()
	out.Set(fasthttp.HeaderContentLength, strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode())
	n, _ := w.Write(body)
	return int64(n)
}

// isHopName reports whether a response field is hop-by-hop.
func isHopName(k string) bool {
	return isHop([]byte(k), false)
}
