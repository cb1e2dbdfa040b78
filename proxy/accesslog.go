package proxy

import (
	"gopher-equalizer/upstream"
	"io"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// The access log: one JSON line per request, with the fields of nginx's
// usual log_format, written when the response is complete. A streamed
// response is complete when the server closes its body (upstream.Body calls
// BodyDone on the client connection); the line then carries the bytes
// actually sent and the whole duration.

// accessLogger builds the lines; the writer behind it never blocks.
type accessLogger struct {
	log zerolog.Logger
}

func newAccessLogger(w io.Writer) *accessLogger {
	if w == nil {
		return nil
	}
	return &accessLogger{log: zerolog.New(w)}
}

// pendingLine holds a streamed response's line until its body is done.
// It lives in the client connection, so waiting allocates nothing.
type pendingLine struct {
	active bool
	log    *accessLogger
	ctx    *fasthttp.RequestCtx
	x      exchange
}

// logAccess writes x's line now, or, for a streamed response, when its
// body is done.
func (p *Proxy) logAccess(ctx *fasthttp.RequestCtx, x *exchange) {
	if c, ok := ctx.Conn().(*clientConn); ok && (c.untilClose || streamedBody(ctx)) {
		c.pending.active, c.pending.log, c.pending.ctx = true, p.access, ctx
		c.pending.x = *x
		return
	}
	p.access.write(ctx, x, int64(len(ctx.Response.Body())))
}

// streamedBody reports whether the response body streams from a backend.
func streamedBody(ctx *fasthttp.RequestCtx) bool {
	switch body := ctx.Response.BodyStream().(type) {
	case *upstream.Body:
		return body.Client != nil
	case *h2Body:
		return body.client != nil
	}
	return false
}

// releaseHeld ends the in-flight counts of the streamed response.
func (c *clientConn) releaseHeld() {
	for i := range c.nheld {
		c.held[i].f.Release(c.held[i].c)
		c.held[i] = heldSlot{}
	}
	c.nheld = 0
}

// BodyDone implements upstream.BodyObserver: the streamed response went out.
func (c *clientConn) BodyDone(sent int64) {
	c.untilClose = false
	c.releaseHeld()
	if !c.pending.active {
		return
	}
	c.pending.active = false
	c.pending.log.write(c.pending.ctx, &c.pending.x, sent)
	c.pending.ctx = nil
}

func (a *accessLogger) write(ctx *fasthttp.RequestCtx, x *exchange, sent int64) {
	now := time.Now()
	var addrBuf [64]byte
	ev := a.log.Log().
		Time("time", now).
		Bytes("client", peerAddr(ctx).AppendTo(addrBuf[:0])).
		Bytes("client_key", x.key()).
		Bytes("method", ctx.Method()).
		Bytes("uri", ctx.RequestURI()).
		Bytes("protocol", ctx.Request.Header.Protocol()).
		Int("status", ctx.Response.StatusCode()).
		Int64("bytes_in", x.bytesIn(ctx)).
		Int64("bytes_out", sent).
		Float64("duration", now.Sub(ctx.Time()).Seconds()).
		Float64("upstream_duration", x.upstream.Seconds()).
		Str("outcome", OutcomeNames[x.outcome]).
		Bool("limited", x.outcome == Limited)
	if x.route != nil {
		ev = ev.Str("route", x.route.Name)
	}
	if x.limit != nil {
		ev = ev.Str("limit", x.limit.Name)
	}
	if x.wouldLimit {
		ev = ev.Bool("would_limit", true)
	}
	if x.backend != nil {
		ev = ev.Str("backend", x.backend.URL)
	}
	ev.Bytes("request_id", x.id()).
		Bytes("user_agent", ctx.UserAgent()).
		Send()
}

// bytesIn is the request body's size as read from the client.
func (x *exchange) bytesIn(ctx *fasthttp.RequestCtx) int64 {
	if x.bodyIn != nil {
		return x.bodyIn.read
	}
	return int64(len(ctx.Request.Body()))
}
