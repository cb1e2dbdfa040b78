package proxy

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/deadline"
	"gopher-equalizer/route"
)

// fasthttp waits for CRLF CRLF to end a request head, so a client that ends
// its lines with bare LF (some scripts, printf | nc) gets no answer until
// the read timeout. nginx and HAProxy accept such requests; so do we: the
// listener below rewrites a head-ending "\n\n" to "\r\n\r\n" (fasthttp
// already accepts bare LF inside the head). It only looks at a read that
// starts a request head, and only at its first head end.

// LenientListener wraps the proxy's listener; Open, when set, counts the
// connections open.
type LenientListener struct {
	net.Listener
	Open *atomic.Int64
	// TLS marks the connections as TLS (ln is a tls.NewListener): the
	// server sees our wrapper, not the *tls.Conn, so ctx.IsTLS cannot tell.
	TLS bool
}

// Listener wraps ln for the proxy's server, counting its connections in
// p.Stats.OpenConns; tls says ln terminates TLS.
func (p *Proxy) Listener(ln net.Listener, tls bool) net.Listener {
	return LenientListener{Listener: ln, Open: &p.Stats.OpenConns, TLS: tls}
}

// Accept implements net.Listener.
func (l LenientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.Open != nil {
		l.Open.Add(1)
	}
	return &clientConn{Conn: c, atHead: true, open: l.Open, tls: l.TLS}, nil
}

// clientConn is a client connection that knows when a request head starts.
// Only the connection's serving goroutine reads it; Close may come from
// another (a tunnel's shutdown).
type clientConn struct {
	net.Conn
	atHead  bool    // the next bytes read may start a request head
	inHead  bool    // they did: the head goes on until its blank line
	last    [3]byte // the head's last bytes so far, for an end split between reads
	nlast   int
	carry   []byte      // rewritten bytes that did not fit the caller's buffer
	body    requestBody // the streamed request body's wrapper, reused
	open    *atomic.Int64
	closed  atomic.Bool
	tls     bool        // the connection is TLS, terminated below this wrapper
	pending pendingLine // a streamed response's access log line
	// held, nheld: a streamed response's in-flight counts, released when
	// its body is done.
	held  [route.MaxLimits]heldSlot
	nheld int
	// untilClose: the response's body goes out in a hijack until the
	// connection closes (HTTP/1.0, unknown length).
	untilClose bool
	linger     bool // close lingering: the client may still be sending a body
	// peeked: the first bytes, read to tell HTTP/2 from HTTP/1.x
	// (h2front.go); they are read again first.
	peeked []byte
}

// Close implements net.Conn, counting the connection closed once.
func (c *clientConn) Close() error {
	if c.open != nil && c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	c.releaseHeld() // whatever happened to the body, its counts end here
	if c.linger {
		c.linger = false
		lingeringClose(c.Conn)
	}
	return c.Conn.Close()
}

// Lingering close, as nginx does it: a client still sending a body we
// refused (413 mid-upload, an early 429) would get a reset on its next
// write if we closed at once, and a reset can destroy our answer before it
// reads it. So the sending side is shut first (the client reads the answer
// and an end of stream), then what it still sends is read and dropped, for
// a bounded time and amount, and only then is the socket closed.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 4 << 20
)

func lingeringClose(c net.Conn) {
	switch c.(type) {
	case *net.TCPConn, *deadline.Conn: // not TLS: its CloseWrite does not shut the socket
	default:
		return
	}
	if c.(interface{ CloseWrite() error }).CloseWrite() != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, c, lingerBytes)
}

func (c *clientConn) Read(p []byte) (int, error) {
	if len(c.carry) > 0 {
		n := copy(p, c.carry)
		c.carry = c.carry[n:]
		return n, nil
	}
	var n int
	var err error
	if len(c.peeked) > 0 {
		n = copy(p, c.peeked)
		c.peeked = c.peeked[n:]
	} else {
		n, err = c.Conn.Read(p)
	}
	if c.atHead && n > 0 {
		if !c.inHead && !startsRequestLine(p[:n]) {
			// Not a head: the rest of a body whose head the server read
			// ahead (pipelining). It is never mended.
			c.atHead = false
			return n, err
		}
		if !c.inHead {
			c.inHead, c.nlast = true, 0
		}
		if c.endsAcrossReads(p[:n]) {
			return n, err
		}
		n = c.fixHead(p, n)
		if c.inHead {
			c.keepLast(p[:n])
		}
	}
	return n, err
}

// endsAcrossReads reports whether the head's blank line began in an
// earlier read and ends in b; the head is then over, and the rest of b is
// a body that must not be touched. A bare "\n\n" split so is not mended
// (its first half is gone): fasthttp judges that head as it is.
func (c *clientConn) endsAcrossReads(b []byte) bool {
	if c.nlast == 0 {
		return false
	}
	var joined [6]byte
	j := append(append(joined[:0], c.last[:c.nlast]...), b[:min(len(b), 3)]...)
	for _, end := range [][]byte{crlfcrlf, lflf} {
		if i := bytes.Index(j, end); i >= 0 && i < c.nlast {
			c.atHead, c.inHead = false, false
			return true
		}
	}
	return false
}

// keepLast remembers the last three bytes of the head read so far.
func (c *clientConn) keepLast(b []byte) {
	if len(b) >= len(c.last) {
		c.nlast = copy(c.last[:], b[len(b)-len(c.last):])
		return
	}
	var joined [6]byte
	j := append(append(joined[:0], c.last[:c.nlast]...), b...)
	c.nlast = copy(c.last[:], j[max(len(j)-len(c.last), 0):])
}

// startsRequestLine reports whether b can be the start of a request head:
// optional CRLF empty lines, a method's letters, then a space or the end
// of b (a head may come in pieces; letters alone cannot be told from a
// body).
func startsRequestLine(b []byte) bool {
	for bytes.HasPrefix(b, crlfcrlf[:2]) {
		b = b[2:]
	}
	i := 0
	for i < len(b) && (b[i] >= 'A' && b[i] <= 'Z' || b[i] >= 'a' && b[i] <= 'z') {
		i++
	}
	return i > 0 && (i == len(b) || b[i] == ' ') || len(b) == 0
}

var (
	crlfcrlf = []byte("\r\n\r\n")
	lflf     = []byte("\n\n")
)

// fixHead finds the end of the head in p[:n] and, if it is made of bare
// line feeds, inserts the missing carriage returns. It returns the number
// of bytes now in p.
func (c *clientConn) fixHead(p []byte, n int) int {
	b := p[:n]
	crlf := bytes.Index(b, crlfcrlf)
	lf := bytes.Index(b, lflf)
	switch {
	case lf < 0 && crlf < 0:
		return n // the head goes on in the next read
	case lf < 0 || (crlf >= 0 && crlf < lf):
		c.atHead, c.inHead = false, false
		return n
	}
	c.atHead, c.inHead = false, false
	// b[lf] and b[lf+1] are both '\n'; the first may follow a '\r'.
	var fixed [4]byte
	end := append(fixed[:0], '\r', '\n', '\r', '\n')
	start := lf
	if lf > 0 && b[lf-1] == '\r' {
		start = lf - 1
	}
	tail := b[lf+2:]
	out := make([]byte, 0, start+len(end)+len(tail))
	out = append(append(append(out, b[:start]...), end...), tail...)
	m := copy(p, out)
	if m < len(out) {
		c.carry = out[m:]
	}
	return m
}

// requestDone tells the connection that the handler is done with the
// request, so that the next bytes start a new head. A request body that
// was not read to its end (a 429, a 413, an early answer) would be drained
// by the server through this connection, and a drained body must not be
// taken for a head: such a connection is closed after the answer instead,
// lingering so that the client reads the answer. Whether the body was read
// is this request's: bodyIn is the wrapper streamRequest put on it, nil
// when the handler answered before reaching it.
func requestDone(ctx *fasthttp.RequestCtx, bodyIn *requestBody) {
	c, ok := ctx.Conn().(*clientConn)
	if !ok {
		return
	}
	if ctx.Hijacked() {
		// A tunnel or a hand-written answer takes the connection: what
		// follows is not HTTP, and a request head's repairs must never
		// touch it.
		c.atHead, c.inHead = false, false
		return
	}
	unread := ctx.Request.IsBodyStream()
	if bodyIn != nil {
		unread = !bodyIn.eof
	}
	if unread {
		ctx.SetConnectionClose()
		c.linger = true
		return
	}
	c.atHead, c.inHead = true, false
}

// isTLS reports whether the client spoke TLS to us.
func isTLS(ctx *fasthttp.RequestCtx) bool {
	if c, ok := ctx.Conn().(*clientConn); ok && c.tls {
		return true
	}
	return ctx.IsTLS()
}
