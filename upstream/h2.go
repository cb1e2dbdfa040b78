package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 upstream. Backends named h2c:// speak HTTP/2 with prior knowledge
// (gRPC servers do): every request to them goes through an http2.Transport,
// which streams both ways at once, carries trailers and resets a stream
// whose client went away. Requests from HTTP/2 clients to http:// and
// https:// backends go through net/http's Transport, which negotiates h2
// with an https backend that offers it (ALPN) and speaks HTTP/1.1
// otherwise. HTTP/1.1 clients to http:// and https:// backends keep the
// fasthttp HostClient.

// newRoundTripper builds the backend's net/http client side.
func (c *Client) newRoundTripper(opt Options) http.RoundTripper {
	dialer := &net.Dialer{Timeout: opt.DialTimeout, KeepAlive: 30 * time.Second}
	if c.H2 {
		return &http2.Transport{
			AllowHTTP: true,
			// h2c: the "TLS" dial is a plain TCP connection.
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return dialer.DialContext(ctx, network, c.Addr)
			},
			// A connection silent this long is probed with a PING and
			// closed when no answer comes: a dead backend fails its
			// streams instead of hanging them.
			ReadIdleTimeout:  30 * time.Second,
			PingTimeout:      10 * time.Second,
			IdleConnTimeout:  max(opt.MaxIdleConnTime, time.Second),
			WriteByteTimeout: max(opt.StreamIdleTimeout, time.Second),
			// Several connections when one has no stream left to give.
			StrictMaxConcurrentStreams: false,
		}
	}
	t := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 1024,
		MaxConnsPerHost:     opt.MaxConns,
		IdleConnTimeout:     max(opt.MaxIdleConnTime, time.Second),
		// Our own users' bodies are passed as they are, compressed or not.
		DisableCompression:  true,
		TLSHandshakeTimeout: opt.DialTimeout,
	}
	if c.TLS != nil {
		t.TLSClientConfig = c.TLS.Clone()
		t.ForceAttemptHTTP2 = true
	}
	return t
}

// RoundTrip sends req over the backend's net/http client side (see above).
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.rt.RoundTrip(req)
}

// Scheme is the scheme requests to the backend are written with.
func (c *Client) Scheme() string {
	if c.TLS != nil {
		return "https"
	}
	return "http"
}
