package proxy

import (
	"bytes"
	"gopher-equalizer/upstream"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Upgrade tunnels (WebSocket and any other protocol): a request with
// Connection: upgrade and Upgrade: <protocol> goes upstream with both; a
// 101 answer that names the same protocol turns the client connection and
// a dedicated backend connection into a byte tunnel, with no frame parsing,
// until either side closes or both stay silent for TunnelIdleTimeout. A
// half-close (EOF one way) is passed on and the other way goes on.

// tunnelBuf is the copy buffer of one direction. Small on purpose: an idle
// WebSocket holds two of them.
const tunnelBuf = 8 << 10

var tunnelBufs = sync.Pool{New: func() any { b := make([]byte, tunnelBuf); return &b }}

// tunnels tracks open tunnels so that the end of a graceful stop can close
// them; the request path never touches it.
type tunnels struct {
	mu   sync.Mutex
	open map[net.Conn]net.Conn // client -> backend
}

func (t *tunnels) add(client, backend net.Conn) {
	t.mu.Lock()
	if t.open == nil {
		t.open = map[net.Conn]net.Conn{}
	}
	t.open[client] = backend
	t.mu.Unlock()
}

func (t *tunnels) remove(client net.Conn) {
	t.mu.Lock()
	delete(t.open, client)
	t.mu.Unlock()
}

// Len is the number of open tunnels.
func (t *tunnels) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// closeAll closes both ends of every open tunnel.
func (t *tunnels) closeAll() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, b := range t.open {
		c.Close()
		b.Close()
	}
	return len(t.open)
}

// OpenTunnels is how many Upgrade tunnels are open.
func (p *Proxy) OpenTunnels() int { return p.tunnels.Len() }

// CloseTunnels closes every open tunnel; the end of a graceful stop calls
// it, once no new request can arrive. It returns how many it closed.
func (p *Proxy) CloseTunnels() int { return p.tunnels.closeAll() }

// upgradeAsked returns the protocol a request asks to switch to, or nil.
func upgradeAsked(f *fields) []byte {
	if !f.connectionUpgrade {
		return nil
	}
	return f.upgrade
}

// startTunnel answers a 101 and hands the client connection to the tunnel.
// It reports false when the backend switched to another protocol than the
// one asked for: the caller answers 502.
func (p *Proxy) startTunnel(ctx *fasthttp.RequestCtx, x *exchange, up *upstream.Upgraded, asked []byte) bool {
	h := &ctx.Response.Header
	got := h.Peek(fasthttp.HeaderUpgrade)
	if len(got) == 0 {
		for k, v := range h.All() {
			if bytes.EqualFold(k, []byte(fasthttp.HeaderUpgrade)) {
				got = v
				break
			}
		}
	}
	if !bytes.EqualFold(bytes.TrimSpace(got), asked) {
		up.Close()
		return false
	}
	backend, backendR, closeBackend := up.Take()
	stripResponse(h)
	h.Set(fasthttp.HeaderConnection, "Upgrade")
	h.SetBytesV(fasthttp.HeaderUpgrade, asked)
	ctx.Response.ResetBody()
	p.Stats.tunnel()
	idle := p.cfg.TunnelIdleTimeout
	// The tunnel counts in flight for concurrency limits until it closes.
	held := heldOf(x)
	ctx.Hijack(func(client net.Conn) {
		p.tunnels.add(client, backend)
		defer p.tunnels.remove(client)
		defer closeBackend()
		defer held.release()
		relay(client, backend, backendR, idle)
	})
	return true
}

// relay copies both ways until both directions ended.
func relay(client, backend net.Conn, backendR io.Reader, idle time.Duration) {
	// Any byte either way keeps both sides alive: a stream that only
	// flows one way must not time out on the silent side.
	extend := func() {
		if idle > 0 {
			d := time.Now().Add(idle)
			_ = client.SetReadDeadline(d)
			_ = backend.SetReadDeadline(d)
		}
	}
	extend()
	_ = client.SetWriteDeadline(time.Time{})
	_ = backend.SetWriteDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		pipe(backend, client, extend)
		close(done)
	}()
	pipe(client, backendR, extend)
	<-done
}

// pipe copies src to dst. On EOF it half-closes dst and returns; on any
// other end (reset, timeout) it closes dst, which ends the other direction
// too.
func pipe(dst net.Conn, src io.Reader, extend func()) {
	bp := tunnelBufs.Get().(*[]byte)
	defer tunnelBufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			extend()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				closeConn(dst)
				return
			}
		}
		if err == io.EOF {
			if !closeWrite(dst) {
				closeConn(dst)
			}
			return
		}
		if err != nil {
			closeConn(dst)
			closeReader(src)
			return
		}
	}
}

func closeConn(c net.Conn) { _ = c.Close() }

func closeReader(r io.Reader) {
	if c, ok := r.(net.Conn); ok {
		_ = c.Close()
	}
}

// closeWrite half-closes c, looking through the wrappers the server and
// the listener put around the TCP connection.
func closeWrite(c net.Conn) bool {
	for {
		switch x := c.(type) {
		case interface{ CloseWrite() error }:
			return x.CloseWrite() == nil
		case interface{ UnsafeConn() net.Conn }:
			c = x.UnsafeConn()
		case *clientConn:
			c = x.Conn
		default:
			return false
		}
	}
}
