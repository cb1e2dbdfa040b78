package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 on the client side. fasthttp speaks HTTP/1.1 only, so the proxy's
// listener sorts connections before fasthttp sees them: a TLS connection
// that negotiated h2 by ALPN, or a cleartext one that opens with the
// HTTP/2 connection preface (h2c with prior knowledge, what gRPC clients
// send), is served by Go's HTTP/2 server; every other one goes to fasthttp
// untouched. Sorting takes the connection's first bytes (or its TLS
// handshake) in a goroutine of its own, so a slow client never holds up
// the accept loop.

// HTTP2Config is the HTTP/2 server's part of the configuration.
type HTTP2Config struct {
	// MaxConcurrentStreams bounds the streams open at once on one
	// connection (SETTINGS_MAX_CONCURRENT_STREAMS).
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a request's header list
	// (SETTINGS_MAX_HEADER_LIST_SIZE); EQUALIZER_MAX_HEADER_SIZE.
	MaxHeaderBytes int
	// HandshakeTimeout bounds the TLS handshake and the wait for the first
	// bytes (EQUALIZER_READ_TIMEOUT).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection without open streams this long
	// (EQUALIZER_IDLE_TIMEOUT).
	IdleTimeout time.Duration
	// WriteTimeout bounds each write to a client that does not read
	// (EQUALIZER_STREAM_IDLE_TIMEOUT).
	WriteTimeout time.Duration
	// MaxConns bounds the client connections, both protocols together
	// (EQUALIZER_MAX_CLIENT_CONNS).
	MaxConns int64
}

// HTTP2 serves the HTTP/2 connections of the proxy's listener.
type HTTP2 struct {
	p     *Proxy
	cfg   HTTP2Config
	srv   *http2.Server
	base  *http.Server // carries the shutdown signal to srv's connections
	conns sync.Map     // net.Conn -> struct{}: open HTTP/2 connections
	open  *atomic.Int64
	done  chan struct{}
}

// NewHTTP2 prepares the HTTP/2 server of p.
func (p *Proxy) NewHTTP2(cfg HTTP2Config) (*HTTP2, error) {
	h := &HTTP2{p: p, cfg: cfg, open: &p.Stats.OpenHTTP2, done: make(chan struct{})}
	// The server's own log lines are about clients that broke the
	// protocol (a bad preface, a flood): what nginx logs at info level.
	// They are dropped, as fasthttp's are, so that a flood cannot fill
	// the log.
	h.base = &http.Server{MaxHeaderBytes: cfg.MaxHeaderBytes, Handler: p.HTTP2Handler(),
		ErrorLog: stdlog.New(io.Discard, "", 0)}
	h.srv = &http2.Server{
		MaxConcurrentStreams: cfg.MaxConcurrentStreams,
		// The protocol's default, as clients send anyway: no frame of a
		// client needs more buffer than this.
		MaxReadFrameSize: 16 << 10,
		IdleTimeout:      cfg.IdleTimeout,
		WriteByteTimeout: cfg.WriteTimeout,
		// A client silent this long gets a PING; no answer closes it.
		ReadIdleTimeout: 60 * time.Second,
		PingTimeout:     15 * time.Second,
	}
	if err := http2.ConfigureServer(h.base, h.srv); err != nil {
		return nil, err
	}
	return h, nil
}

// Listener wraps ln (a TLS listener when tls is set) for the proxy's
// fasthttp server: it yields the HTTP/1.x connections and serves the
// HTTP/2 ones itself.
func (h *HTTP2) Listener(ln net.Listener, tls bool) net.Listener {
	s := &sortingListener{Listener: ln, h: h, tls: tls, open: &h.p.Stats.OpenConns,
		http1: make(chan net.Conn), closed: make(chan struct{})}
	go s.acceptLoop()
	return s
}

// sortingListener is the proxy listener when HTTP/2 is on.
type sortingListener struct {
	net.Listener
	h         *HTTP2
	tls       bool
	open      *atomic.Int64
	http1     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	err       atomic.Pointer[error] // why the accept loop ended
}

func (s *sortingListener) acceptLoop() {
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				s.err.Store(&err)
				s.Close()
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			select {
			case <-s.closed:
				return
			case <-time.After(50 * time.Millisecond):
				continue
			}
		}
		s.open.Add(1)
		go s.sort(&clientConn{Conn: c, atHead: true, open: s.open, tls: s.tls})
	}
}

// http2Preface opens every HTTP/2 connection (RFC 9113 3.4).
var (
	http2Preface = []byte(http2.ClientPreface)
	prefaceLine  = []byte("PRI * HTTP/2.0\r\n")
)

// sort reads just enough of c to know its protocol.
func (s *sortingListener) sort(c *clientConn) {
	_ = c.Conn.SetDeadline(time.Now().Add(s.h.cfg.HandshakeTimeout))
	isH2 := false
	if tc, ok := c.Conn.(*tls.Conn); ok {
		if tc.Handshake() != nil {
			c.Close()
			return
		}
		isH2 = tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS
	} else {
		var buf [24]byte
		n := 0
		for n < len(buf) {
			m, err := c.Conn.Read(buf[n:])
			n += m
			if !bytes.HasPrefix(http2Preface, buf[:n]) || err != nil {
				break
			}
		}
		if n == 0 {
			c.Close()
			return
		}
		isH2 = bytes.Equal(buf[:n], http2Preface)
		if !isH2 && n == len(buf) && bytes.HasPrefix(buf[:n], prefaceLine) {
			c.Close() // a broken HTTP/2 preface is no HTTP/1.1 request (RFC 9113 3.4)
			return
		}
		c.peeked = append([]byte(nil), buf[:n]...)
	}
	_ = c.Conn.SetDeadline(time.Time{})
	if isH2 {
		c.atHead = false // frames, never a head to mend
		s.h.serve(c)
		return
	}
	select {
	case s.http1 <- c:
	case <-s.closed:
		c.Close()
	}
}

// Accept yields the next HTTP/1.x connection.
func (s *sortingListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.http1:
		return c, nil
	case <-s.closed:
		if err := s.err.Load(); err != nil {
			return nil, *err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections being sorted are closed.
func (s *sortingListener) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.Listener.Close()
	})
	return err
}

// serve runs one HTTP/2 connection until it ends.
func (h *HTTP2) serve(c *clientConn) {
	if h.cfg.MaxConns > 0 && h.p.Stats.OpenConns.Load() > h.cfg.MaxConns {
		c.Close()
		return
	}
	select {
	case <-h.done: // draining: no new connection
		c.Close()
		return
	default:
	}
	h.conns.Store(c, struct{}{})
	h.open.Add(1)
	defer func() {
		h.conns.Delete(c)
		h.open.Add(-1)
		c.Close()
	}()
	h.srv.ServeConn(&bufferedConn{Conn: c, r: bufio.NewReaderSize(c, 16<<10)}, &http2.ServeConnOpts{
		Context:    context.WithValue(context.Background(), connKey{}, net.Conn(c)),
		BaseConfig: h.base,
		Handler:    h.base.Handler,
	})
}

// bufferedConn reads ahead: the HTTP/2 server reads each frame's 9-byte
// header and its payload with two reads of the connection, which without a
// buffer are two system calls per frame.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Shutdown sends GOAWAY on every HTTP/2 connection and waits until their
// streams are done, or ctx ends; then it closes what is left.
func (h *HTTP2) Shutdown(ctx context.Context) error {
	close(h.done)
	_ = h.base.Shutdown(ctx) // runs the HTTP/2 server's graceful shutdown (GOAWAY)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for h.open.Load() > 0 {
		select {
		case <-ctx.Done():
			h.conns.Range(func(k, _ any) bool {
				_ = k.(net.Conn).Close()
				return true
			})
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
