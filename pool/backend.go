package pool

import (
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Backend is one upstream server. Its HostClient keeps a pool of keep-alive
// connections; the counters are read by /metrics. A Backend is safe for
// concurrent use and lives as long as the Pool that owns it.
type Backend struct {
	// URL is the backend as configured, for example http://10.0.0.5:8080.
	URL string
	// Addr is host:port, the address the HostClient dials.
	Addr   string
	Client *fasthttp.HostClient

	healthy  atomic.Bool
	requests atomic.Uint64
	failures atomic.Uint64
	// connectFails counts connection failures in a row for passive health.
	connectFails atomic.Int32
}

// ClientOptions are the HostClient settings shared by every backend.
type ClientOptions struct {
	DialTimeout     time.Duration
	MaxConns        int
	MaxIdleConnTime time.Duration
	ReadBufferSize  int
	MaxResponseBody int
	// MaxConnWait is how long a request waits for a free connection when
	// MaxConns are busy before it fails with ErrNoFreeConns.
	MaxConnWait time.Duration
}

// NewBackend parses an absolute http URL and prepares its HostClient.
// A new backend counts as healthy until a probe says otherwise, so traffic
// flows from the first request.
func NewBackend(rawURL string, opt ClientOptions) (*Backend, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", rawURL, err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http URL (want http://host:port)", rawURL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%q must have no path, query or user info", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr += ":80"
	}
	dialer := &fasthttp.TCPDialer{}
	dialTimeout := opt.DialTimeout
	b := &Backend{URL: rawURL, Addr: addr}
	b.Client = &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			return dialer.DialTimeout(addr, dialTimeout)
		},
		MaxConns:            opt.MaxConns,
		MaxIdleConnDuration: opt.MaxIdleConnTime,
		ReadBufferSize:      opt.ReadBufferSize,
		MaxResponseBodySize: opt.MaxResponseBody,
		MaxConnWaitTimeout:  opt.MaxConnWait,
		// LIFO reuses the most recently used connections, which are hot in
		// the caches and least likely to have been closed by the backend.
		ConnPoolStrategy:              fasthttp.LIFO,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		// One retry for idempotent requests covers a keep-alive connection
		// that the backend closed while it sat idle; the deadline is shared.
		MaxIdemponentCallAttempts: 2,
	}
	b.healthy.Store(true)
	return b, nil
}

// Healthy reports the backend's last known health.
func (b *Backend) Healthy() bool { return b.healthy.Load() }

// Requests is how many requests were sent to this backend.
func (b *Backend) Requests() uint64 { return b.requests.Load() }

// Failures is how many forwarded requests failed (502 or 504).
func (b *Backend) Failures() uint64 { return b.failures.Load() }

// CountRequest is called by the proxy once per forwarded request.
func (b *Backend) CountRequest() { b.requests.Add(1) }

// CountFailure is called by the proxy when a forward fails.
func (b *Backend) CountFailure() { b.failures.Add(1) }
