package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"net"
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
	b *Client
}

// maxStaleInARow bounds how many dead pooled connections one request
// discards before it dials; closing them shrinks the pool, so the loop ends
// anyway, this only caps the work of one request.
const maxStaleInARow = 64

// dedicated dials a connection of its own for a tunnel.
func (t *transport) dedicated() (*held, error) {
	c, err := t.b.dial() // fasthttp's dialer: errors are ErrDialWithUpstream
	if err != nil {
		return nil, err
	}
	return &held{conn: c, close: func() { c.Close() }}, nil
}

// acquire returns a checked idle connection that has rested Settle, or a
// new one. At the connection limit it takes a resting connection that has
// not settled yet (still checked), and waits for one until the deadline.
func (t *transport) acquire(hc *fasthttp.HostClient, deadline time.Time) (*held, error) {
	now := time.Now()
	force := false
	for {
		for stale := 0; stale < maxStaleInARow; stale++ {
			h := t.b.idle.take(now, force)
			if h == nil {
				break
			}
			if err := idleCheck(h.conn); err != nil {
				h.close()
				t.b.discarded(err)
				continue
			}
			return h, nil
		}
		if force && time.Now().After(deadline) {
			return nil, fasthttp.ErrNoFreeConns
		}
		cc, err := hc.AcquireConn(max(time.Until(deadline), 0), false)
		switch {
		case err == nil:
			h := &held{conn: cc.Conn()}
			h.close = func() { hc.CloseConn(cc) }
			return h, nil
		case !errors.Is(err, fasthttp.ErrNoFreeConns):
			return nil, err
		}
		// Every connection is open: take a resting one, or wait for one.
		if force {
			time.Sleep(time.Millisecond)
		}
		force = true
		now = time.Now()
	}
}

func (t *transport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	timeout := req.GetTimeOut()
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	var h *held
	var err error
	if len(req.Header.Peek(fasthttp.HeaderUpgrade)) > 0 {
		// An upgrade gets a dedicated connection that never returns to
		// the pool; it does not count against MaxConns.
		h, err = t.dedicated()
	} else {
		h, err = t.acquire(hc, deadline)
	}
	if err != nil {
		return false, &RoundTripError{StageConnect, err}
	}
	conn := h.conn

	resp.ParseNetConn(conn)

	if err = conn.SetWriteDeadline(deadline); err != nil {
		h.close()
		return false, &RoundTripError{StageConnect, err}
	}
	streaming := req.IsBodyStream() && t.b.streamIdle > 0
	u := upstreamOf(conn)
	if streaming && u != nil {
		u.writeIdle, u.lastSet = t.b.streamIdle, time.Time{}
	}
	if u != nil && conn == net.Conn(u) && !req.IsBodyStream() && len(req.Header.Peek(fasthttp.HeaderUpgrade)) == 0 {
		u.holdRequest() // sent by the first read of the answer (sendonread.go)
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if streaming && u != nil {
		u.writeIdle = 0
		// The wait for the answer starts once the upload is done.
		if timeout > 0 {
			deadline = time.Now().Add(timeout)
		}
	}
	var br *bufio.Reader
	if err != nil {
		// Only a request with a body gets an early answer, and its
		// connection is never reused (reuse below).
		if br = earlyAnswer(hc, conn, req, err, deadline); br == nil {
			h.close()
			return false, &RoundTripError{StageSend, timeoutError(err)}
		}
	}

	if err = conn.SetReadDeadline(deadline); err != nil {
		if br != nil {
			hc.ReleaseReader(br)
		}
		h.close()
		return false, &RoundTripError{StageSend, err}
	}
	if br == nil {
		br = hc.AcquireReader(conn)
		// Wait for the first byte apart, so that a connection that dies
		// before answering is told from one that sent a broken answer.
		if _, err = br.Peek(1); err != nil {
			hc.ReleaseReader(br)
			h.close()
			if sentOnRead(err) {
				return false, &RoundTripError{StageSend, timeoutError(err)}
			}
			return false, &RoundTripError{StageAwait, timeoutError(err)}
		}
	}
	// The head only (1xx answers are skipped); the body is read below.
	resp.SkipBody = true
	resp.Header.DisableNormalizing()
	err = resp.ReadLimitBody(br, 0)
	resp.SkipBody = false
	if err == nil && resp.StatusCode() == fasthttp.StatusSwitchingProtocols && len(req.Header.Peek(fasthttp.HeaderUpgrade)) == 0 {
		err = errUnrequested101
	}
	if err != nil {
		hc.ReleaseReader(br)
		h.close()
		return false, &RoundTripError{StageResponse, timeoutError(err)}
	}
	reuse := !req.ConnectionClose() && !resp.ConnectionClose() && !hasBody(req)

	status := resp.StatusCode()
	cl := resp.Header.ContentLength()
	switch {
	case status == fasthttp.StatusSwitchingProtocols:
		// The connection now belongs to the tunnel, with what br holds.
		resp.SetBodyStream(&Upgraded{conn: conn, br: br, release: h.close}, -1)
		_ = conn.SetDeadline(time.Time{})
		return false, nil
	case req.Header.IsHead() || status < 200 || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified:
		resp.SkipBody = req.Header.IsHead() // keep the backend's Content-Length for HEAD
	case cl >= 0 && cl <= SmallBody:
		if err = resp.ReadBody(br, 0); err != nil {
			hc.ReleaseReader(br)
			h.close()
			return false, &RoundTripError{StageResponse, timeoutError(err)}
		}
	default:
		release := func(ok bool) {
			hc.ReleaseReader(br)
			if ok && reuse {
				t.b.idle.put(h, time.Now())
			} else {
				h.close()
			}
		}
		body := &Body{br: br, conn: conn, header: &resp.Header, Idle: t.b.streamIdle, release: release, b: t.b}
		if body.Idle <= 0 {
			_ = conn.SetReadDeadline(time.Time{}) // the head arrived; the body may take its time
		}
		switch cl {
		case -1:
			body.mode = chunked
		case -2:
			body.mode = untilClose
		default:
			body.mode, body.left = fixedLength, int64(cl)
		}
		resp.SetBodyStream(body, cl)
		if cl < 0 {
			resp.Header.SetContentLength(-1) // chunked to the client
		}
		return false, nil
	}
	leftover := br.Buffered()
	hc.ReleaseReader(br)
	switch {
	case leftover > 0:
		t.b.discarded(fmt.Errorf("%w (%d bytes after the response)", ErrUnsolicited, leftover))
		h.close()
	case reuse:
		t.b.idle.put(h, time.Now())
	default:
		h.close()
	}
	return false, nil
}

// hasBody reports whether req sent a body upstream. (A GET without one
// reads as ContentLength -2, "no body", not 0.)
func hasBody(req *fasthttp.Request) bool {
	cl := req.Header.ContentLength()
	return req.IsBodyStream() || cl > 0 || cl == -1 || len(req.Body()) > 0
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
