package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// SmallBody is the largest Content-Length read into memory at once; larger
// bodies, chunked bodies and bodies that end when the backend closes are
// streamed through a Body. Small answers stay on the buffered path, which
// allocates nothing.
const SmallBody = 64 << 10

// Body streams a backend's response body to the client with bounded memory:
// each Read returns what the backend sent, at most one of its chunks, so the
// server writes (and flushes) a chunk as soon as it arrives. It holds the
// backend connection until closed; the connection goes back to the pool
// only if the body was read to its end and nothing followed it.
//
// The fasthttp server reads and closes it from the connection's goroutine
// after the handler returned, so it needs no lock.
type Body struct {
	br     *bufio.Reader
	conn   net.Conn
	header *fasthttp.ResponseHeader // receives the trailer fields
	mode   bodyMode
	left   int64 // bytes left: of the body (fixed) or of the chunk (chunked)
	done   bool  // read to its end, framing intact
	broken bool  // a read failed: the connection is at an unknown offset
	closed bool
	// Idle is the longest wait for the next bytes from the backend; the
	// same time is given to each write to Client.
	Idle time.Duration
	// Client is the client connection the body goes to; its write deadline
	// is moved on before each piece, so a long download lasts as long as
	// bytes keep moving. Set by the proxy; nil leaves it alone.
	Client net.Conn

	sent     int64 // body bytes handed to the client side
	release  func(reuse bool)
	b        *Client
	detached bool
	lastSet  time.Time // when the deadlines were last moved
}

// copyBufs are the buffers of bulk copies: big enough that a gigabyte is
// a few thousand system calls.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// deadlineStep is how far time must move before the deadlines are moved
// again: a deadline is a timer operation, and moving it on every read of a
// fast stream costs more than the copy. The idle timeout then holds to
// within this fraction.
const deadlineStep = 16

// SupportsBodyWriteTo tells fasthttp to call WriteTo for a body of known
// length; a chunked body is read piece by piece, so that each of the
// backend's chunks is flushed to the client at once.
func (b *Body) SupportsBodyWriteTo() bool { return b.mode == fixedLength }

// WriteTo copies the body to w in big pieces.
func (b *Body) WriteTo(w io.Writer) (int64, error) { return Copy(w, b) }

// Copy copies r to w until EOF in 64 KiB pieces from a pool. It calls r.Read
// itself, never io.Copy's WriterTo shortcut: r's own WriteTo may be what
// calls Copy.
func Copy(w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var total int64
	for {
		n, err := r.Read(*bp)
		if n > 0 {
			m, werr := w.Write((*bp)[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Detach makes Close and CloseWithError no-ops: the caller took the body
// out of the response and ends it with Release.
func (b *Body) Detach() { b.detached = true }

type bodyMode uint8

const (
	fixedLength bodyMode = iota
	chunked
	untilClose
)

var errBadChunk = errors.New("malformed chunked body from backend")

// Read implements io.Reader.
func (b *Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.closed || b.broken {
		return 0, io.ErrClosedPipe
	}
	if b.Idle > 0 {
		if now := time.Now(); now.Sub(b.lastSet) > b.Idle/deadlineStep {
			b.lastSet = now
			_ = b.conn.SetReadDeadline(now.Add(b.Idle))
			if b.Client != nil {
				_ = b.Client.SetWriteDeadline(now.Add(b.Idle))
			}
		}
	}
	n, err := b.read(p)
	b.sent += int64(n)
	if err != nil && err != io.EOF {
		b.broken = true
	}
	return n, err
}

// BodyObserver is told, through the Client connection, when the server is
// done with a streamed body and how many bytes of it went out (the access
// log writes its line then).
type BodyObserver interface {
	BodyDone(sent int64)
}

func (b *Body) read(p []byte) (int, error) {
	switch b.mode {
	case fixedLength:
		n, err := b.br.Read(p[:min(int64(len(p)), b.left)])
		b.left -= int64(n)
		if b.left == 0 {
			b.done = true
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	case chunked:
		if b.left == 0 {
			size, err := b.chunkSize()
			if err != nil {
				return 0, err
			}
			if size == 0 {
				// The last chunk: trailer fields, then the end.
				if err := b.header.ReadTrailer(b.br); err != nil {
					return 0, err
				}
				b.done = true
				return 0, io.EOF
			}
			b.left = size
		}
		n, err := b.br.Read(p[:min(int64(len(p)), b.left)])
		b.left -= int64(n)
		if b.left == 0 && err == nil {
			err = b.crlf()
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	default: // untilClose
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.done = true
		}
		return n, err
	}
}

// chunkSize reads a chunk-size line; extensions are ignored.
func (b *Body) chunkSize() (int64, error) {
	line, err := b.br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			return 0, io.ErrUnexpectedEOF
		}
		return 0, errBadChunk
	}
	line = bytes.TrimRight(line, "\r\n")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 63)
	if err != nil || size < 0 {
		return 0, errBadChunk
	}
	return size, nil
}

func (b *Body) crlf() error {
	c, err := b.br.ReadByte()
	if err == nil && c == '\r' {
		c, err = b.br.ReadByte()
	}
	if err != nil {
		return err
	}
	if c != '\n' {
		return errBadChunk
	}
	return nil
}

// Close releases the backend connection: back to the pool when the body
// was read to its end with nothing after it, closed otherwise.
func (b *Body) Close() error { return b.CloseWithError(nil) }

// CloseWithError is what the fasthttp server calls when it is done writing.
func (b *Body) CloseWithError(err error) error {
	if b.detached {
		return nil
	}
	if o, ok := b.Client.(BodyObserver); ok && !b.closed {
		o.BodyDone(b.sent)
	}
	return b.Release(err)
}

// Release ends the body, detached or not: the connection goes back to the
// pool if the body was read to its end with nothing after it.
func (b *Body) Release(err error) error {
	if b.closed {
		return nil
	}
	b.closed = true
	reuse := err == nil && b.done && !b.broken && b.mode != untilClose
	if reuse && b.br.Buffered() > 0 {
		reuse = false
		b.b.discarded(ErrUnsolicited)
	}
	b.release(reuse)
	return nil
}
