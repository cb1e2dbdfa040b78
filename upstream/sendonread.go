package upstream

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// Sending a request when its answer is awaited. Go reads a socket before
// it waits on it, so a round trip costs write, read (EAGAIN: the backend
// has not answered yet), wait, read. Here the request bytes are held back
// until the first read of the answer and written from inside the wait
// (syscall.RawConn.Read), after the poller was reset for it: the answer
// can only arrive after that write, so its readiness is never missed, and
// the EAGAIN read is gone. Only for plain-HTTP requests without a
// streamed body, whose bytes are all known before the answer is read.

// errNotSent wraps a write that failed inside the wait, so that the
// transport reports the send stage, not the wait for the answer.
type errNotSent struct{ err error }

func (e *errNotSent) Error() string { return e.err.Error() }
func (e *errNotSent) Unwrap() error { return e.err }

// holdRequest makes the next writes wait for the first read.
func (u *upstreamConn) holdRequest() bool {
	if u.raw == nil {
		return false
	}
	u.holding = true
	u.held = u.held[:0]
	return true
}

func (u *upstreamConn) Write(p []byte) (int, error) {
	if u.holding {
		u.held = append(u.held, p...)
		return len(p), nil
	}
	u.moveWriteDeadline()
	return u.Conn.Write(p)
}

func (u *upstreamConn) Read(p []byte) (int, error) {
	if !u.holding {
		return u.Conn.Read(p)
	}
	u.holding = false
	u.dst, u.n, u.err, u.sent = p, 0, nil, 0
	err := u.raw.Read(u.sendThenRead) // under the coarse read deadline, if any
	u.dst = nil
	switch {
	case err != nil && u.sent < len(u.held):
		return 0, &errNotSent{err}
	case err != nil:
		return 0, err
	case u.err != nil:
		return u.n, u.err
	case u.sent < len(u.held):
		// The socket took only part of the request: send the rest the
		// usual way (under the write deadline), then read.
		if _, err := u.Conn.Write(u.held[u.sent:]); err != nil {
			return 0, &errNotSent{err}
		}
		return u.Conn.Read(p)
	}
	return u.n, nil
}

// sendOnRead is the RawConn callback: the first call writes the held
// request and waits; later calls read the answer.
func (u *upstreamConn) sendOnRead(fd uintptr) bool {
	for u.sent < len(u.held) {
		n, err := syscall.Write(int(fd), u.held[u.sent:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true // the rest is written outside, where writes can wait
		case err != nil:
			u.err = &errNotSent{err}
			return true
		}
		u.sent += n
		if u.sent == len(u.held) {
			return false // sent: wait for the answer
		}
	}
	n, err := syscall.Read(int(fd), u.dst)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return false
	case err != nil:
		u.err = &net.OpError{Op: "read", Net: "tcp", Err: err}
	case n == 0:
		u.err = io.EOF
	}
	u.n = max(n, 0)
	return true
}

// sentOnRead reports whether err comes from a request write that failed
// inside the wait.
func sentOnRead(err error) bool {
	var e *errNotSent
	return errors.As(err, &e)
}
