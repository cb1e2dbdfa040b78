package proxy

import (
	"bytes"
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/pool"
	"gopher-equalizer/upstream"
)

// maxAttempts bounds how many backends one request is sent to.
const maxAttempts = 3

// forward sends the request to b and, when an attempt failed in a way that
// is safe to repeat, to another healthy backend, all within one
// EQUALIZER_BACKEND_TIMEOUT: like nginx's proxy_next_upstream "error", a
// request that was never sent goes on whatever its method, and an
// idempotent one goes on when its connection failed before any response
// byte. It returns the backend that answered or failed last, and the time
// spent waiting for backends.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, x *exchange, b *pool.Backend) (*pool.Backend, time.Duration, error) {
	req := &ctx.Request
	deadline := ctx.Time().Add(p.cfg.BackendTimeout)
	// Writing a streamed body consumes it (and fasthttp drops the stream
	// on failure), so remember now whether there was one.
	streamed := req.IsBodyStream()
	var waited time.Duration
	tlsScheme := false
	for attempt := 1; ; attempt++ {
		if tls := b.TLS != nil; tls || tlsScheme {
			// The HostClient refuses a request whose scheme is not its
			// own; the target goes upstream in origin form either way.
			setScheme(req, tls)
			tlsScheme = tls
		}
		start := time.Now()
		b.Begin()
		b.Stats.Start()
		err := b.HTTP.DoDeadline(req, &ctx.Response, deadline)
		took := time.Since(start)
		b.Done(took)
		waited += took
		if err == nil {
			b.Stats.Answered(ctx.Response.StatusCode(), took)
			x.route.Pool.Connected(b)
			return b, waited, nil
		}
		if !errors.Is(err, errBodyTooLarge) { // that one is the client's doing
			b.Stats.Failed(err)
		}
		if connectFailed(err) {
			p.connectFailed(x.route.Pool, b, err)
		}
		if attempt == maxAttempts || !retryable(err, req, streamed) || time.Until(deadline) <= 0 {
			return b, waited, err
		}
		next := x.route.Pool.NextExcept(b, x.keyHash)
		if next == nil {
			// The only backend: a connection that died after it was
			// checked is worth one fresh try, a refused one is not.
			if upstream.StageOf(err) == upstream.StageConnect || attempt > 1 {
				return b, waited, err
			}
			next = b
		}
		b = next
	}
}

var (
	schemeHTTP  = []byte("http")
	schemeHTTPS = []byte("https")
)

func setScheme(req *fasthttp.Request, tls bool) {
	if tls {
		req.URI().SetSchemeBytes(schemeHTTPS)
	} else {
		req.URI().SetSchemeBytes(schemeHTTP)
	}
}

// retryable reports whether a failed attempt may be sent again.
func retryable(err error, req *fasthttp.Request, streamed bool) bool {
	if errors.Is(err, fasthttp.ErrTimeout) {
		return false // the backend is slow, not gone: another try only doubles the load
	}
	if errors.Is(err, errBodyTooLarge) {
		return false // the client's doing
	}
	switch upstream.StageOf(err) {
	case upstream.StageConnect:
		return connectFailed(err)
	case upstream.StageSend, upstream.StageAwait:
		// A streamed body went (in part) to the failed backend: it
		// cannot be sent again.
		return idempotent(req.Header.Method()) && !streamed
	}
	return false
}

// idempotent methods may be sent twice (RFC 9110 9.2.2).
func idempotent(method []byte) bool {
	switch string(method) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodPut, fasthttp.MethodDelete,
		fasthttp.MethodOptions, fasthttp.MethodTrace:
		return true
	}
	return false
}

// toOriginForm turns an absolute-form request target (GET http://h/p) into
// origin form, whatever its scheme, taking its authority as Host (RFC 9112
// 3.2.2): backends expect origin form, and the scheme is ours to decide.
func toOriginForm(req *fasthttp.Request) {
	uri := req.Header.RequestURI()
	if len(uri) == 0 || uri[0] == '/' || (len(uri) == 1 && uri[0] == '*') {
		return
	}
	i := bytes.Index(uri, []byte("://"))
	if i <= 0 {
		return // authority form (CONNECT) or garbage: the backend judges it
	}
	rest := uri[i+3:]
	end := bytes.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	if at := bytes.LastIndexByte(authority, '@'); at >= 0 {
		authority = authority[at+1:] // user info never goes upstream
	}
	var buf [512]byte
	target := append(buf[:0], rest[end:]...)
	if len(target) == 0 || target[0] != '/' {
		target = append([]byte{'/'}, target...)
	}
	if len(authority) > 0 {
		req.Header.SetHostBytes(authority)
	}
	req.SetRequestURIBytes(target)
}

// setPath sends path (normalised, decoded) upstream instead of the
// request's path, keeping the query: a route that strips its prefix. The
// backends' HostClients send the URI's original path as it is
// (DisablePathNormalizing), so that becomes the encoded form: /a b goes
// as /a%20b.
func setPath(req *fasthttp.Request, path []byte) {
	uri := req.URI()
	uri.SetPathBytes(path)
	target := uri.RequestURI() // encoded path and query
	encoded := target
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		encoded = target[:i]
	}
	uri.SetPathBytes(encoded)
	req.Header.SetRequestURIBytes(target)
}
