package pool

import (
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"
)

// Stage says how far a round trip got before it failed, which decides
// whether the proxy may send the request again, and to whom.
type Stage uint8

const (
	// StageConnect: no connection could be had; the request was not sent.
	StageConnect Stage = iota + 1
	// StageSend: writing the request failed; the backend may have a part.
	StageSend
	// StageAwait: the request was sent, and the connection failed before a
	// single response byte arrived.
	StageAwait
	// StageResponse: the response was malformed, cut, or unsolicited.
	StageResponse
)

// RoundTripError is a failed round trip and the stage it reached.
type RoundTripError struct {
	Stage Stage
	Err   error
}

func (e *RoundTripError) Error() string { return e.Err.Error() }
func (e *RoundTripError) Unwrap() error { return e.Err }

// StageOf returns the stage a round trip error reached, or 0 when err did
// not come from a backend connection (for example ErrTimeout spent waiting
// for a free connection).
func StageOf(err error) Stage {
	var rt *RoundTripError
	if errors.As(err, &rt) {
		return rt.Stage
	}
	return 0
}

var errUnrequested101 = errors.New("backend switched protocols although no upgrade was requested")

// transport is every backend's fasthttp RoundTripper: fasthttp's own round
// trip, plus the guards that keep each response on its own request.
//
//   - A pooled connection with bytes or EOF pending is closed, never used:
//     those bytes would be read as the next request's answer.
//   - A connection with bytes left over after a complete response (a HEAD
//     answered with a body, a body longer than its Content-Length) is
//     closed instead of pooled.
//   - A connection that carried a request body is closed after the answer.
//     A backend may answer before it read the body (Python's http.server
//     does when a handler ignores it) and then parse the body as a request
//     of its own; its answer to that can arrive after the connection was
//     checked and handed to the next client, which no check can see. A new
//     connection per request with a body is the price of never delivering
//     it to someone else (HAProxy's "http-reuse safe" pays similar).
//   - A 101 answer to a request that asked for no upgrade is an error: the
//     connection now speaks another protocol.
//
// fasthttp's own retries are off (MaxIdemponentCallAttempts 1): the proxy
// retries on another backend, using the Stage of the error.
type transport struct {
	b *Backend
}

// maxStaleInARow bounds how many dead pooled connections one request
// discards before it dials; closing them shrinks the pool, so the loop ends
// anyway, this only caps the work of one request.
const maxStaleInARow = 64

func (t *transport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	timeout := req.GetTimeOut()
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	cc, err := hc.AcquireConn(timeout, req.ConnectionClose())
	for stale := 0; err == nil && stale < maxStaleInARow; stale++ {
		// A fresh connection has no last use and nothing to check.
		if cc.LastUseTime().IsZero() {
			break
		}
		cerr := idleCheck(cc.Conn())
		if cerr == nil {
			break
		}
		hc.CloseConn(cc)
		t.b.discarded(cerr)
		if timeout > 0 {
			timeout = time.Until(deadline)
			if timeout <= 0 {
				return false, &RoundTripError{StageConnect, fasthttp.ErrTimeout}
			}
		}
		cc, err = hc.AcquireConn(timeout, req.ConnectionClose())
	}
	if err != nil {
		return false, &RoundTripError{StageConnect, err}
	}
	conn := cc.Conn()
	resp.ParseNetConn(conn)

	if err = conn.SetWriteDeadline(deadline); err != nil {
		hc.CloseConn(cc)
		return false, &RoundTripError{StageConnect, err}
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		hc.CloseConn(cc)
		return false, &RoundTripError{StageSend, timeoutError(err)}
	}

	if err = conn.SetReadDeadline(deadline); err != nil {
		hc.CloseConn(cc)
		return false, &RoundTripError{StageSend, err}
	}
	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	resp.Header.DisableNormalizing()
	br := hc.AcquireReader(conn)
	// Wait for the first byte apart, so that a connection that dies before
	// answering is told from one that sent a broken answer.
	if _, err = br.Peek(1); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return false, &RoundTripError{StageAwait, timeoutError(err)}
	}
	err = resp.ReadLimitBody(br, hc.MaxResponseBodySize)
	if err == nil && resp.StatusCode() == fasthttp.StatusSwitchingProtocols && len(req.Header.Peek(fasthttp.HeaderUpgrade)) == 0 {
		err = errUnrequested101
	}
	leftover := br.Buffered()
	hc.ReleaseReader(br)
	if err != nil {
		hc.CloseConn(cc)
		return false, &RoundTripError{StageResponse, timeoutError(err)}
	}
	switch {
	case leftover > 0:
		t.b.discarded(fmt.Errorf("%w (%d bytes after the response)", ErrUnsolicited, leftover))
		hc.CloseConn(cc)
	case req.ConnectionClose() || resp.ConnectionClose() || hasBody(req):
		hc.CloseConn(cc)
	default:
		hc.ReleaseConn(cc)
	}
	return false, nil
}

// hasBody reports whether req sent a body upstream. (A GET without one
// reads as ContentLength -2, "no body", not 0.)
func hasBody(req *fasthttp.Request) bool {
	cl := req.Header.ContentLength()
	return cl > 0 || cl == -1 || len(req.Body()) > 0
}

// timeoutError maps any timeout to fasthttp.ErrTimeout, which the proxy
// answers with 504.
func timeoutError(err error) error {
	var t interface{ Timeout() bool }
	if errors.As(err, &t) && t.Timeout() {
		return fasthttp.ErrTimeout
	}
	return err
}
