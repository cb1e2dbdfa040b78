package proxy

import (
	"errors"
	"gopher-equalizer/upstream"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// Streaming: request bodies go upstream as the client sends them and
// response bodies go to the client as the backend sends them, in pieces,
// with backpressure (a slow reader slows the writer) and bounded memory.
// The backend timeout covers the wait for the response head; after that,
// a body may take as long as bytes keep moving: StreamIdleTimeout bounds
// each pause, on either side.

var errBodyTooLarge = errors.New("request body too large")

// requestBody is the client's request body on its way upstream: each read
// moves the client connection's read deadline on, and the bytes are counted
// against the body limit.
type requestBody struct {
	r    io.Reader
	conn net.Conn
	idle time.Duration
	max  int64 // 0: unlimited
	read int64
	eof  bool // read to its end
	// lastSet is when the read deadline was last moved; it moves at most
	// every idle/16, since each move is a timer operation.
	lastSet time.Time
}

// SupportsBodyWriteTo lets fasthttp copy the body with WriteTo.
func (b *requestBody) SupportsBodyWriteTo() bool { return true }

// WriteTo copies the body upstream in big pieces.
func (b *requestBody) WriteTo(w io.Writer) (int64, error) { return upstream.Copy(w, b) }

func (b *requestBody) Read(p []byte) (int, error) {
	if b.max > 0 && b.read > b.max {
		return 0, errBodyTooLarge // sticky: the upload is cut here
	}
	if b.idle > 0 {
		if now := time.Now(); now.Sub(b.lastSet) > b.idle/16 {
			b.lastSet = now
			_ = b.conn.SetReadDeadline(now.Add(b.idle))
		}
	}
	n, err := b.r.Read(p)
	b.eof = err == io.EOF
	b.read += int64(n)
	if b.max > 0 && b.read > b.max {
		return 0, errBodyTooLarge
	}
	return n, err
}

// streamRequest puts the request body stream behind a requestBody. The
// wrapper lives in the client connection, so a request allocates nothing.
// It answers 413 itself, before anything goes upstream, when the declared
// length is over the limit.
func (p *Proxy) streamRequest(ctx *fasthttp.RequestCtx, x *exchange) bool {
	req := &ctx.Request
	if !req.IsBodyStream() {
		return true
	}
	cl := req.Header.ContentLength()
	if p.cfg.MaxBodySize > 0 && int64(cl) > p.cfg.MaxBodySize {
		x.answer(ctx, BodyTooLarge, "request body too large\n", fasthttp.StatusRequestEntityTooLarge)
		return false
	}
	var b *requestBody
	if c, ok := ctx.Conn().(*clientConn); ok {
		b = &c.body
	} else {
		b = &requestBody{}
	}
	*b = requestBody{r: req.BodyStream(), conn: ctx.Conn(), idle: p.cfg.StreamIdleTimeout, max: p.cfg.MaxBodySize}
	req.SetBodyStream(b, cl)
	x.bodyIn = b
	return true
}

// streamResponse ties a streamed response body to the client connection,
// so that each piece written may take StreamIdleTimeout, and sends the
// head at once (time to first byte). An HTTP/1.0 client cannot take a
// chunked body: it gets the body until the connection closes.
func (p *Proxy) streamResponse(ctx *fasthttp.RequestCtx, http10 bool) {
	body, ok := ctx.Response.BodyStream().(*upstream.Body)
	if !ok {
		return
	}
	body.Client = ctx.Conn()
	ctx.Response.ImmediateHeaderFlush = true
	if http10 && ctx.Response.Header.ContentLength() < 0 {
		p.streamUntilClose(ctx, body)
	}
}

// streamUntilClose writes the head and the body itself, without framing,
// and closes the connection: HTTP/1.0's way to send a body of unknown length.
// The head is rendered in the hijack, after the handler returned, so that
// the fields set last (request ID, rate-limit fields) are in it; the access
// log line waits for the body, as for any streamed body.
func (p *Proxy) streamUntilClose(ctx *fasthttp.RequestCtx, body *upstream.Body) {
	h := &ctx.Response.Header
	h.SetConnectionClose()
	body.Detach()
	ctx.Response.ResetBody()
	ctx.HijackSetNoResponse(true)
	client := ctx.Conn()
	if c, ok := client.(*clientConn); ok {
		c.untilClose = true
	}
	ctx.Hijack(func(c net.Conn) {
		var sent int64
		defer func() {
			_ = body.Release(nil)
			if o, ok := client.(upstream.BodyObserver); ok {
				o.BodyDone(sent)
			}
		}()
		h.SetContentLength(-2)
		if _, err := c.Write(h.Header()); err != nil {
			return
		}
		bp := tunnelBufs.Get().(*[]byte)
		defer tunnelBufs.Put(bp)
		sent, _ = io.CopyBuffer(c, body, *bp)
	})
}
