package upstream

import (
	"bufio"
	"errors"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// earlyAnswerWait bounds the wait for an answer after a failed upload.
const earlyAnswerWait = time.Second

// earlyAnswer looks for an answer the backend sent before it read the
// whole request: a 413 for a body too large, a 401 before the upload, and
// then a close, so that writing the rest failed. The answer is already in
// the socket's receive buffer (or on its way), and nginx and HAProxy pass
// it on instead of a 502; so do we. Only a request with a body gets one:
// a bodiless request's write fails only when the backend had closed
// before it, and what it sent then answers nothing we asked (an idle
// timeout's 408; the idle check before reuse catches those, but for a
// moment). The connection is never reused after it. It returns a reader
// holding the answer's first byte, or nil when none came within
// earlyAnswerWait.
func earlyAnswer(hc *fasthttp.HostClient, conn net.Conn, req *fasthttp.Request, err error, deadline time.Time) *bufio.Reader {
	// Only when writing to the backend failed: a body that could not be
	// read from the client (gone, or over EQUALIZER_MAX_BODY_SIZE) is the
	// proxy's to answer at once.
	var op *net.OpError
	if !hasBody(req) || !errors.As(err, &op) || op.Op != "write" {
		return nil
	}
	wait := time.Now().Add(earlyAnswerWait)
	if !deadline.IsZero() && deadline.Before(wait) {
		wait = deadline
	}
	if conn.SetReadDeadline(wait) != nil {
		return nil
	}
	br := hc.AcquireReader(conn)
	if _, err := br.Peek(1); err != nil {
		hc.ReleaseReader(br)
		return nil
	}
	return br
}
