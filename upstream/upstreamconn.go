package upstream

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
	"time"

	"gopher-equalizer/deadline"
)

// Errors of a pooled connection that must not carry another request.
var (
	// ErrUnsolicited means the backend sent bytes nobody asked for: the
	// rest of an answer that was longer than it said, or an answer to no
	// request. Reading them as the next request's answer would give one
	// client another client's response.
	ErrUnsolicited = errors.New("backend sent bytes that answer no request")
	// errPeerClosed means the backend closed the idle connection.
	errPeerClosed = errors.New("backend closed the idle connection")
)

// upstreamConn is a backend connection that remembers its file descriptor,
// so that checking it for pending bytes costs one system call and no
// allocation.
type upstreamConn struct {
	net.Conn
	fd int // -1 when the descriptor is not reachable (not TCP)
	// writeIdle, while a request body streams, gives each write its own
	// deadline, so an upload lasts as long as bytes keep moving.
	writeIdle time.Duration
	lastSet   time.Time

	// Sending on read (sendonread.go): raw is the socket (nil when not
	// TCP), held the request bytes waiting for the first read.
	raw          syscall.RawConn
	sendThenRead func(fd uintptr) bool // u.sendOnRead, bound once
	holding      bool
	held         []byte
	sent         int
	dst          []byte
	n            int
	err          error
}

func (u *upstreamConn) moveWriteDeadline() {
	if u.writeIdle > 0 {
		if now := time.Now(); now.Sub(u.lastSet) > u.writeIdle/deadlineStep {
			u.lastSet = now
			_ = u.Conn.SetWriteDeadline(now.Add(u.writeIdle))
		}
	}
}

func newUpstreamConn(c net.Conn, deadlines *deadline.Sweeper) *upstreamConn {
	u := &upstreamConn{Conn: deadlines.Wrap(c), fd: -1}
	if sc, ok := u.Conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) { u.fd = int(fd) })
			u.raw = raw
			u.sendThenRead = u.sendOnRead
		}
	}
	return u
}

// idleCheck reports why an idle connection must not be reused: bytes are
// waiting on it, or the backend closed or reset it. nil means it is clean.
// Like nginx, which closes a kept-alive upstream connection that becomes
// readable, it never reads what is pending.
func idleCheck(c net.Conn) error {
	u := upstreamOf(c)
	if u == nil || u.fd < 0 {
		return nil
	}
	return peekPending(u.fd)
}

// upstreamOf finds the upstreamConn under c, through TLS: on an https
// backend any bytes that arrive on an idle connection are records nobody
// asked for (data or a close), and the socket shows them the same way.
func upstreamOf(c net.Conn) *upstreamConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	u, _ := c.(*upstreamConn)
	return u
}

// CloseWrite half-closes the connection, for tunnels.
func (u *upstreamConn) CloseWrite() error {
	if cw, ok := u.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return u.Conn.Close()
}
