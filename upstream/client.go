// Package upstream talks to one backend: its keep-alive connections
// (checked before reuse, never handed on with bytes nobody asked for), the
// round trip that keeps answers on their requests, the request written
// from inside the wait for its answer, response bodies streamed with
// bounded memory, early answers to uploads, and the connections of
// Upgrade tunnels. Package pool decides which backend; this package
// carries the request there.
package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/deadline"
	"gopher-equalizer/logthrottle"
)

// Client talks to one backend: its HostClient keeps the keep-alive
// connections (checked before reuse by the transport), and it dials the
// dedicated connections of tunnels. It is safe for concurrent use.
type Client struct {
	// URL is the backend as configured, for example http://10.0.0.5:8080.
	URL string
	// TLS is the client configuration of an https backend; nil for http.
	TLS *tls.Config
	// Addr is host:port, the address the HostClient dials.
	Addr string
	// HTTP sends requests; its Transport is this package's.
	HTTP *fasthttp.HostClient
	// H2 marks an h2c:// backend: every request goes over HTTP/2 (h2.go).
	H2 bool
	rt http.RoundTripper // net/http's client side, h2.go

	// discardedConns counts pooled connections closed because the backend
	// sent unrequested bytes or closed them while idle.
	discardedConns atomic.Uint64
	unsolicited    atomic.Uint64 // of those, the ones with unrequested bytes
	log            *logthrottle.Logger
	streamIdle     time.Duration
	idle           idleConns // idle connections, managed by the transport
	// dial opens a connection outside the HostClient's count, for tunnels,
	// which may outnumber MaxConns by far (idle WebSockets).
	dial func() (net.Conn, error)
}

// Options are the HostClient settings shared by every backend.
type Options struct {
	DialTimeout     time.Duration
	MaxConns        int
	MaxIdleConnTime time.Duration
	ReadBufferSize  int
	// StreamIdleTimeout is the longest pause between two reads of a
	// streamed response body (EQUALIZER_STREAM_IDLE_TIMEOUT).
	StreamIdleTimeout time.Duration
	// Log reports unsolicited backend bytes, throttled; nil logs nothing.
	Log *logthrottle.Logger
	// RootCAs verify https backends (EQUALIZER_BACKEND_CA); nil: the
	// system roots.
	RootCAs *x509.CertPool
	// Deadlines, when set, gives backend connections coarse deadlines
	// (package deadline); nil keeps Go's own.
	Deadlines *deadline.Sweeper
}

// NewClient prepares the client of the backend rawURL at addr (host:port);
// serverName is set for https (SNI and verification).
// h2c marks an h2c:// backend.
func NewClient(rawURL, addr string, https, h2c bool, serverName string, opt Options) *Client {
	dialer := &fasthttp.TCPDialer{}
	dialTimeout := opt.DialTimeout
	c := &Client{URL: rawURL, Addr: addr, H2: h2c, log: opt.Log, streamIdle: opt.StreamIdleTimeout}
	c.idle.maxIdle = opt.MaxIdleConnTime
	if https {
		// SNI and verification against the host name of the URL, with
		// the system roots or EQUALIZER_BACKEND_CA.
		c.TLS = &tls.Config{ServerName: serverName, RootCAs: opt.RootCAs, MinVersion: tls.VersionTLS12}
	}
	c.rt = c.newRoundTripper(opt)
	c.dial = func() (net.Conn, error) {
		conn, err := dialer.DialTimeout(addr, dialTimeout)
		if err != nil {
			return nil, err
		}
		return c.WrapTLS(newUpstreamConn(conn, opt.Deadlines), time.Now().Add(dialTimeout))
	}
	c.HTTP = &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			conn, err := dialer.DialTimeout(addr, dialTimeout)
			if err != nil {
				return nil, err
			}
			return newUpstreamConn(conn, opt.Deadlines), nil
		},
		Transport: &transport{b: c},
		IsTLS:     c.TLS != nil,
		TLSConfig: c.TLS,
		// The HostClient dials and counts connections (MaxConns); the
		// transport keeps the idle ones itself (conns.go) and does its own
		// waiting at the limit, so the HostClient never waits.
		MaxConns:                      opt.MaxConns,
		ReadBufferSize:                opt.ReadBufferSize,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		// The transport checks every pooled connection before use, and the
		// proxy retries on another backend, so fasthttp retries nothing.
		MaxIdemponentCallAttempts: 1,
	}
	return c
}

// WrapTLS makes c a TLS client connection for an https backend, handshake
// done by deadline; for http it returns conn.
func (c *Client) WrapTLS(conn net.Conn, deadline time.Time) (net.Conn, error) {
	if c.TLS == nil {
		return conn, nil
	}
	t := tls.Client(conn, c.TLS)
	_ = t.SetDeadline(deadline)
	if err := t.Handshake(); err != nil {
		t.Close()
		return nil, err
	}
	_ = t.SetDeadline(time.Time{})
	return t, nil
}

// DiscardedConns is how many pooled connections were closed instead of
// reused because the backend closed them or sent bytes nobody asked for.
func (c *Client) DiscardedConns() uint64 { return c.discardedConns.Load() }

// Unsolicited is how many connections were closed because the backend sent
// bytes that answer no request.
func (c *Client) Unsolicited() uint64 { return c.unsolicited.Load() }

// discarded counts a connection closed instead of reused; unsolicited bytes
// are a backend bug worth a (throttled) line, an idle close is routine.
func (c *Client) discarded(err error) {
	c.discardedConns.Add(1)
	if errors.Is(err, ErrUnsolicited) {
		c.unsolicited.Add(1)
		if c.log != nil {
			c.log.Event().Err(err).Str("backend", c.URL).Msg("backend sent unrequested bytes; connection closed, not reused")
		}
	}
}
