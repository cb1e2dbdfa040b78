package upstream

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"gopher-equalizer/deadline"
	"gopher-equalizer/pool/pooltest"
)

// tcpPair returns a connected client (as the pool wraps it) and server.
func tcpPair(t *testing.T, sweeper *deadline.Sweeper, sndbuf int) (*upstreamConn, net.Conn) {
	t.Helper()
	c, server := pooltest.TCPPair(t)
	if sndbuf > 0 {
		_ = c.SetWriteBuffer(sndbuf)
	}
	u := newUpstreamConn(c, sweeper)
	t.Cleanup(func() { u.Close() })
	return u, server
}

// A held request reaches the backend whole, and its answer is read, for a
// request that fits the socket and for one that does not (the rest is
// written the usual way).
func TestHeldRequestIsSentByTheFirstRead(t *testing.T) {
	for _, size := range []int{100, 4 << 20} {
		u, server := tcpPair(t, nil, 4096)
		request := bytes.Repeat([]byte("r"), size)
		got := make(chan []byte, 1)
		go func() {
			time.Sleep(50 * time.Millisecond) // let the client's socket fill
			b := make([]byte, size)
			_, err := io.ReadFull(server, b)
			if err != nil {
				got <- nil
				return
			}
			got <- b
			_, _ = server.Write([]byte("answer"))
		}()
		if !u.holdRequest() {
			t.Fatal("a TCP connection cannot hold a request")
		}
		if n, err := u.Write(request); n != size || err != nil {
			t.Fatalf("held write: %d, %v", n, err)
		}
		buf := make([]byte, 64)
		n, err := io.ReadAtLeast(u, buf, len("answer"))
		if err != nil || string(buf[:n]) != "answer" {
			t.Fatalf("size %d: read %q, %v", size, buf[:n], err)
		}
		if b := <-got; !bytes.Equal(b, request) {
			t.Fatalf("size %d: the backend did not get the request whole", size)
		}
		// The connection is back to plain reads and writes.
		go func() { _, _ = server.Write([]byte("more")) }()
		if n, err := io.ReadAtLeast(u, buf, 4); err != nil || string(buf[:n]) != "more" {
			t.Fatalf("plain read after: %q, %v", buf[:n], err)
		}
	}
}

// The wait for the answer keeps the connection's (coarse) read deadline.
func TestHeldRequestWaitTimesOut(t *testing.T) {
	sweeper := deadline.New(10 * time.Millisecond)
	defer sweeper.Stop()
	u, server := tcpPair(t, sweeper, 0)
	go func() { _, _ = io.Copy(io.Discard, server) }() // reads, never answers
	u.holdRequest()
	_, _ = u.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_ = u.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	_, err := u.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) || sentOnRead(err) {
		t.Fatalf("err = %v, want a read timeout after the request was sent", err)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > time.Second {
		t.Fatalf("timed out after %v", took)
	}
}

// A backend that closed before the request was held and sent: the error
// says so, and is not taken for a wait that failed.
func TestHeldRequestToAClosedBackend(t *testing.T) {
	u, server := tcpPair(t, nil, 0)
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // RST
	time.Sleep(20 * time.Millisecond)
	u.holdRequest()
	_, _ = u.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_, err := u.Read(make([]byte, 10))
	if !sentOnRead(err) {
		t.Fatalf("err = %v, want the send stage's error", err)
	}
}
