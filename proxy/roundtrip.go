package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/pool"
	"gopher-equalizer/upstream"
)

// The round trip over net/http's client side (upstream/h2.go): every
// request to an h2c:// backend, and HTTP/2 clients' requests to any
// backend. The head was rewritten by toUpstream like any other; this file
// only carries it.

// errHeadTimeout ends a round trip whose response head did not come within
// EQUALIZER_BACKEND_TIMEOUT.
var errHeadTimeout = errors.New("backend timeout")

// sentBody is a request body on its way over net/http: it notes whether a
// byte was taken (a request whose body was not touched may go to another
// backend), and its Close does nothing, since the transport closes the
// body it was given and the same body may be given again.
type sentBody struct {
	r       io.Reader
	touched bool
}

func (b *sentBody) Read(p []byte) (int, error) {
	b.touched = true
	return b.r.Read(p)
}

func (b *sentBody) Close() error { return nil }

// roundTrip sends ctx's request to b and, when no connection could be made
// and the body was not touched, to another healthy backend, as forward
// does. rctx ends with the client's stream (RST_STREAM upstream). The
// response head must come within EQUALIZER_BACKEND_TIMEOUT; the body may
// then take as long as it moves. It returns the backend that answered or
// failed last.
func (p *Proxy) roundTrip(rctx context.Context, ctx *fasthttp.RequestCtx, x *exchange, b *pool.Backend, body io.Reader, length int64) (*pool.Backend, *http.Response, error) {
	req := &ctx.Request
	target, err := url.ParseRequestURI(string(req.Header.RequestURI()))
	if err != nil {
		return b, nil, errBadTarget
	}
	hdr := make(http.Header, req.Header.Len())
	for k, v := range req.Header.All() {
		if notCarried(k) {
			continue
		}
		name := string(k)
		hdr[name] = append(hdr[name], string(v))
	}
	var sb *sentBody
	if body != nil && length != 0 {
		sb = &sentBody{r: body}
	}
	deadline := ctx.Time().Add(p.cfg.BackendTimeout)
	for attempt := 1; ; attempt++ {
		u := *target
		u.Scheme, u.Host = b.Scheme(), b.Addr
		out := (&http.Request{Method: string(req.Header.Method()), URL: &u, Header: hdr,
			Host: string(req.Header.Host()), ContentLength: length, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1})
		if out.Host == "" {
			out.Host = b.Addr
		}
		if sb != nil {
			out.Body = sb
		}
		headCtx, cancel := context.WithCancelCause(rctx)
		timer := time.AfterFunc(time.Until(deadline), func() { cancel(errHeadTimeout) })
		start := time.Now()
		b.Begin()
		b.Stats.Start()
		resp, err := b.RoundTrip(out.WithContext(headCtx))
		timer.Stop()
		took := time.Since(start)
		b.Done(took)
		x.upstream += took
		if err == nil {
			b.Stats.Answered(resp.StatusCode, took)
			x.route.Pool.Connected(b)
			resp.Body = cancelOnClose{resp.Body, cancel}
			return b, resp, nil
		}
		cause := context.Cause(headCtx)
		cancel(nil)
		switch {
		case errors.Is(cause, errHeadTimeout):
			err = errHeadTimeout
		case rctx.Err() != nil:
			return b, nil, errClientGone
		}
		b.Stats.Failed(err)
		var op *net.OpError
		dialFailed := errors.As(err, &op) && op.Op == "dial"
		if dialFailed {
			p.connectFailed(x.route.Pool, b, err)
		}
		if attempt == maxAttempts || !dialFailed || (sb != nil && sb.touched) || time.Until(deadline) <= 0 {
			return b, nil, err
		}
		next := x.route.Pool.NextExcept(b, x.keyHash)
		if next == nil {
			return b, nil, err
		}
		b = next
	}
}

// notCarried names the fields net/http writes itself.
func notCarried(k []byte) bool {
	for _, n := range []string{fasthttp.HeaderHost, fasthttp.HeaderContentLength, fasthttp.HeaderTransferEncoding, fasthttp.HeaderConnection} {
		if strings.EqualFold(string(k), n) {
			return true
		}
	}
	return false
}

var (
	errBadTarget  = errors.New("request target is not a valid URI")
	errClientGone = errors.New("client went away")
)

// cancelOnClose ends the stream's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(nil)
	return err
}

// forwardH1overH2 carries an HTTP/1.1 client's request to an h2c://
// backend. An Upgrade does not cross HTTP/2. The response's trailers
// follow a chunked body as HTTP/1.1 trailer fields.
func (p *Proxy) forwardH1overH2(ctx *fasthttp.RequestCtx, x *exchange, c *client, b *pool.Backend) {
	if !p.streamRequest(ctx, x) {
		return
	}
	req := &ctx.Request
	toOriginForm(req)
	p.toUpstream(ctx, x, c)
	req.Header.Del(fasthttp.HeaderUpgrade)
	var body io.Reader
	length := int64(req.Header.ContentLength())
	switch {
	case req.IsBodyStream():
		body = req.BodyStream()
	case len(req.Body()) > 0:
		body, length = bytes.NewReader(req.Body()), int64(len(req.Body()))
	default:
		length = 0
	}
	b, resp, err := p.roundTrip(context.Background(), ctx, x, b, body, length)
	x.backend = b
	if err != nil {
		p.fail(ctx, x, err)
		return
	}
	h := &ctx.Response.Header
	h.SetStatusCode(resp.StatusCode)
	for k, vs := range resp.Header {
		if isHopName(k) {
			continue
		}
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	ctx.Response.SetBodyStream(&h2Body{r: resp.Body, client: ctx.Conn(), resp: resp, header: h}, int(resp.ContentLength))
	ctx.Response.ImmediateHeaderFlush = true
	x.outcome = Forwarded
	if p.cfg.RateLimitHeaders && x.charged {
		setLimitFields(h, x, x.route)
	}
}

// h2Body is an HTTP/2 backend's response body on its way to an HTTP/1.1
// client; its end is the end of the response, as for upstream.Body.
type h2Body struct {
	r      io.ReadCloser
	client net.Conn
	resp   *http.Response
	header *fasthttp.ResponseHeader // takes the trailers at the end
	sent   int64
	closed bool
}

func (b *h2Body) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.sent += int64(n)
	if err == io.EOF && b.resp.ContentLength < 0 {
		// Known only now (gRPC announces none): fasthttp writes the
		// trailer section after the last chunk.
		for k, vs := range b.resp.Trailer {
			if b.header.AddTrailer(k) != nil {
				continue // a field no trailer may carry
			}
			for _, v := range vs {
				b.header.Add(k, v)
			}
		}
	}
	return n, err
}

func (b *h2Body) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.r.Close()
	if o, ok := b.client.(upstream.BodyObserver); ok {
		o.BodyDone(b.sent)
	}
	return err
}
