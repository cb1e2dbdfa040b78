// Package deadline gives connections coarse deadlines. Each time a Go
// connection's deadline moves, the runtime re-arms a timer under a lock;
// a proxied request moves five of them (three on the client's side, two
// upstream). Here moving one is an atomic store, and one sweeper goroutine
// wakes the reads and writes whose deadline has passed, at most one tick
// late. A deadline in the past still takes effect at once.
package deadline

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/puzpuzpuz/xsync/v4"
)

// Sweeper expires the deadlines of the connections it wrapped.
type Sweeper struct {
	tick  time.Duration
	conns *xsync.Map[*Conn, struct{}]
	stop  chan struct{}
	once  sync.Once
}

// New starts a sweeper that looks at its connections every tick.
func New(tick time.Duration) *Sweeper {
	s := &Sweeper{tick: tick, conns: xsync.NewMap[*Conn, struct{}](), stop: make(chan struct{})}
	go s.run()
	return s
}

// Stop ends the sweeper; its connections keep their last real deadlines.
func (s *Sweeper) Stop() { s.once.Do(func() { close(s.stop) }) }

func (s *Sweeper) run() {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			ns := now.UnixNano()
			s.conns.Range(func(c *Conn, _ struct{}) bool {
				c.expire(ns)
				return true
			})
		}
	}
}

// Wrap gives c coarse deadlines; a nil sweeper returns c as it is.
func (s *Sweeper) Wrap(c net.Conn) net.Conn {
	if s == nil {
		return c
	}
	w := &Conn{Conn: c, s: s}
	s.conns.Store(w, struct{}{})
	return w
}

// Listener wraps every connection ln accepts; a nil sweeper returns ln.
func (s *Sweeper) Listener(ln net.Listener) net.Listener {
	if s == nil {
		return ln
	}
	return listener{ln, s}
}

type listener struct {
	net.Listener
	s *Sweeper
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.s.Wrap(c), nil
}

// Conn is a connection with coarse deadlines.
type Conn struct {
	net.Conn
	s           *Sweeper
	read, write side
}

// side is one direction: its deadline (Unix nanoseconds, 0 for none) and
// whether a call is blocked in it, so that idle connections with a stale
// deadline cost the sweeper a load and nothing else.
type side struct {
	at   atomic.Int64
	busy atomic.Bool
}

// aLongTimeAgo, set as the real deadline, wakes a blocked call at once.
var aLongTimeAgo = time.Unix(1, 0)

func (c *Conn) expire(now int64) {
	if c.read.busy.Load() {
		if at := c.read.at.Load(); at != 0 && at <= now {
			_ = c.Conn.SetReadDeadline(aLongTimeAgo)
		}
	}
	if c.write.busy.Load() {
		if at := c.write.at.Load(); at != 0 && at <= now {
			_ = c.Conn.SetWriteDeadline(aLongTimeAgo)
		}
	}
}

func (c *Conn) Read(p []byte) (int, error) {
	for {
		c.read.busy.Store(true)
		n, err := c.Conn.Read(p)
		c.read.busy.Store(false)
		if n > 0 || !c.stale(&c.read, err, false) {
			return n, err
		}
	}
}

func (c *Conn) Write(p []byte) (int, error) {
	written := 0
	for {
		c.write.busy.Store(true)
		n, err := c.Conn.Write(p[written:])
		c.write.busy.Store(false)
		written += n
		if err == nil || !c.stale(&c.write, err, true) {
			return written, err
		}
	}
}

// stale reports whether err is a timeout the sweeper caused for a deadline
// that has moved since (it read the old one just before the new one was
// set); the real deadline is then cleared and the call goes on.
func (c *Conn) stale(s *side, err error, write bool) bool {
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	at := s.at.Load()
	if at != 0 && at <= time.Now().UnixNano() {
		return false
	}
	return c.setReal(write, time.Time{}) == nil
}

func (c *Conn) set(s *side, t time.Time, write bool) error {
	if t.IsZero() {
		s.at.Store(0)
		return nil
	}
	ns := t.UnixNano()
	s.at.Store(ns)
	if ns <= time.Now().UnixNano() {
		return c.setReal(write, t) // a deadline already past interrupts now
	}
	return nil
}

func (c *Conn) setReal(write bool, t time.Time) error {
	if write {
		return c.Conn.SetWriteDeadline(t)
	}
	return c.Conn.SetReadDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.set(&c.read, t, false)
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.set(&c.write, t, true)
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	err := c.SetReadDeadline(t)
	if werr := c.SetWriteDeadline(t); err == nil {
		err = werr
	}
	return err
}

// Close implements net.Conn and forgets the connection.
func (c *Conn) Close() error {
	c.s.conns.Delete(c)
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection (tunnels, lingering close).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("deadline: CloseWrite on a connection that cannot half-close")
}

// SyscallConn gives the wrapped socket's syscall.RawConn, with reads that
// keep the coarse read deadline (a callback may run again after a timeout
// the sweeper caused for a deadline that has moved since).
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("deadline: the wrapped connection has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return rawConn{rc, c}, nil
}

type rawConn struct {
	syscall.RawConn
	c *Conn
}

func (r rawConn) Read(f func(fd uintptr) bool) error {
	for {
		r.c.read.busy.Store(true)
		err := r.RawConn.Read(f)
		r.c.read.busy.Store(false)
		if !r.c.stale(&r.c.read, err, false) {
			return err
		}
	}
}
