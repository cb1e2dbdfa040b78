package pool

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/deadline"
	"gopher-equalizer/logthrottle"
)

// Backend is one upstream server. Its HostClient keeps a pool of keep-alive
// connections; the counters are read by /metrics. A Backend is safe for
// concurrent use and lives as long as the Pool that owns it.
type Backend struct {
	// URL is the backend as configured, for example http://10.0.0.5:8080.
	URL string
	// TLS is the client configuration of an https backend; nil for http.
	TLS *tls.Config
	// Addr is host:port, the address the HostClient dials.
	Addr   string
	Client *fasthttp.HostClient

	seed uint64 // for hash
	// weight is the backend's share of traffic against the others (1 to
	// 1000, default 1), from "URL weight=N" or the /backends API.
	weight atomic.Int32
	// state is Active, Draining or Drained: only active backends are
	// picked.
	state atomic.Int32

	healthy atomic.Bool
	// inFlight and latencyNs feed least_conn and p2c; they are kept with
	// or without metrics.
	inFlight  atomic.Int64
	latencyNs atomic.Int64 // decaying average of the time to the response head
	// Stats are the counters the proxy keeps for /metrics.
	Stats Stats
	// connectFails counts connection failures in a row for passive health.
	connectFails atomic.Int32
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

// ClientOptions are the HostClient settings shared by every backend.
type ClientOptions struct {
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

// wrapTLS makes c a TLS client connection for an https backend, handshake
// done by deadline; for http it returns c.
func (b *Backend) wrapTLS(c net.Conn, deadline time.Time) (net.Conn, error) {
	if b.TLS == nil {
		return c, nil
	}
	t := tls.Client(c, b.TLS)
	_ = t.SetDeadline(deadline)
	if err := t.Handshake(); err != nil {
		t.Close()
		return nil, err
	}
	_ = t.SetDeadline(time.Time{})
	return t, nil
}

// MaxWeight bounds a backend's weight.
const MaxWeight = 1000

// NewBackend parses "http://host:port" with optional settings after spaces
// ("http://10.0.0.5:8080 weight=3", as nginx writes them) and prepares its
// HostClient. A new backend counts as healthy until a probe says
// otherwise, so traffic flows from the first request.
func NewBackend(spec string, opt ClientOptions) (*Backend, error) {
	fields := strings.Fields(spec)
	if len(fields) == 0 {
		return nil, fmt.Errorf("empty backend")
	}
	rawURL := fields[0]
	weight := 1
	for _, f := range fields[1:] {
		v, ok := strings.CutPrefix(f, "weight=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 || n > MaxWeight {
			return nil, fmt.Errorf("%q: want weight=N with N from 1 to %d after the URL, got %q", spec, MaxWeight, f)
		}
		weight = n
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", rawURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http or https URL (want http://host:port or https://host:port)", rawURL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%q must have no path, query or user info", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr += map[string]string{"http": ":80", "https": ":443"}[u.Scheme]
	} else if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("%q has port %s; a port is 1 to 65535", rawURL, u.Port())
	}
	dialer := &fasthttp.TCPDialer{}
	dialTimeout := opt.DialTimeout
	b := &Backend{URL: rawURL, Addr: addr, seed: seedOf(rawURL), log: opt.Log, streamIdle: opt.StreamIdleTimeout}
	b.weight.Store(int32(weight))
	b.idle.maxIdle = opt.MaxIdleConnTime
	if u.Scheme == "https" {
		// SNI and verification against the host name of the URL, with
		// the system roots or EQUALIZER_BACKEND_CA.
		b.TLS = &tls.Config{ServerName: u.Hostname(), RootCAs: opt.RootCAs, MinVersion: tls.VersionTLS12}
	}
	b.dial = func() (net.Conn, error) {
		c, err := dialer.DialTimeout(addr, dialTimeout)
		if err != nil {
			return nil, err
		}
		return b.wrapTLS(newUpstreamConn(c, opt.Deadlines), time.Now().Add(dialTimeout))
	}
	b.Client = &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialer.DialTimeout(addr, dialTimeout)
			if err != nil {
				return nil, err
			}
			return newUpstreamConn(c, opt.Deadlines), nil
		},
		Transport: &transport{b: b},
		IsTLS:     b.TLS != nil,
		TLSConfig: b.TLS,
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
	b.healthy.Store(true)
	return b, nil
}

// Begin counts a request sent to the backend, for least_conn and p2c.
func (b *Backend) Begin() { b.inFlight.Add(1) }

// Done ends what Begin started; took is the wait for the response head
// (or the failure), folded into the decaying average p2c weighs.
func (b *Backend) Done(took time.Duration) {
	b.inFlight.Add(-1)
	old := b.latencyNs.Load()
	if old == 0 {
		b.latencyNs.Store(int64(took))
		return
	}
	// Weight 1/8 for the newest sample; a lost update between two
	// requests finishing at once costs nothing that matters.
	b.latencyNs.Store(old + (int64(took)-old)/8)
}

// InFlight is how many requests wait for their response head.
func (b *Backend) InFlight() int64 { return b.inFlight.Load() }

// Weight is the backend's current weight.
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// State is Active, Draining or Drained.
func (b *Backend) State() State { return State(b.state.Load()) }

// State is where a backend is in its life in the pool.
type State int32

const (
	Active   State = iota // picked when healthy
	Draining              // no new requests; removed or kept drained when its requests are done
	Drained               // kept, not picked
)

// String is the state's name in the API.
func (s State) String() string {
	switch s {
	case Draining:
		return "draining"
	case Drained:
		return "drained"
	}
	return "active"
}

// cost is what p2c compares: the expected wait behind the requests in
// flight, per unit of weight.
func (b *Backend) cost() int64 {
	return (b.inFlight.Load() + 1) * max(b.latencyNs.Load(), int64(time.Microsecond)) / int64(b.weight.Load())
}

// Healthy reports the backend's last known health.
func (b *Backend) Healthy() bool { return b.healthy.Load() }

// DiscardedConns is how many pooled connections were closed instead of
// reused because the backend closed them or sent bytes nobody asked for.
func (b *Backend) DiscardedConns() uint64 { return b.discardedConns.Load() }

// Unsolicited is how many connections were closed because the backend sent
// bytes that answer no request.
func (b *Backend) Unsolicited() uint64 { return b.unsolicited.Load() }

// discarded counts a connection closed instead of reused; unsolicited bytes
// are a backend bug worth a (throttled) line, an idle close is routine.
func (b *Backend) discarded(err error) {
	b.discardedConns.Add(1)
	if errors.Is(err, ErrUnsolicited) {
		b.unsolicited.Add(1)
		if b.log != nil {
			b.log.Event().Err(err).Str("backend", b.URL).Msg("backend sent unrequested bytes; connection closed, not reused")
		}
	}
}
