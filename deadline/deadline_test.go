package deadline

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"gopher-equalizer/pool/pooltest"
)

const tick = 20 * time.Millisecond

// pair returns a wrapped client side and the raw server side of one TCP
// connection on 127.0.0.1.
func pair(t *testing.T, s *Sweeper) (net.Conn, net.Conn) {
	t.Helper()
	c, peer := pooltest.TCPPair(t)
	w := s.Wrap(c)
	t.Cleanup(func() { w.Close() })
	return w, peer
}

// readOne reads one byte from c in a goroutine; the channel gets its error.
func readOne(c net.Conn) chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	return done
}

// sendAndRead writes a byte from peer and wants the waiting read (done)
// to get it: its deadline moved away, so it must not have timed out.
func sendAndRead(t *testing.T, peer net.Conn, done chan error) {
	t.Helper()
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("read failed after its deadline moved: %v", err)
	}
}

func TestReadTimesOutWithinATick(t *testing.T) {
	s := New(tick)
	defer s.Stop()
	c, _ := pair(t, s)
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(100 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	took := time.Since(start)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if took < 100*time.Millisecond || took > 100*time.Millisecond+3*tick {
		t.Fatalf("timed out after %v, want 100ms to 100ms + a tick", took)
	}
}

func TestMovedDeadlineDoesNotFire(t *testing.T) {
	s := New(tick)
	defer s.Stop()
	c, peer := pair(t, s)
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	done := readOne(c)
	// Keep pushing the deadline out while the read waits, as a server
	// moves its idle deadline; the read must not time out.
	for i := 0; i < 15; i++ {
		time.Sleep(tick)
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	}
	_ = c.SetReadDeadline(time.Time{})
	time.Sleep(3 * tick)
	sendAndRead(t, peer, done)
}

func TestPastDeadlineInterruptsAtOnce(t *testing.T) {
	s := New(time.Hour) // the sweeper never runs: only the immediate path can fire
	defer s.Stop()
	c, peer := pair(t, s)
	done := readOne(c)
	time.Sleep(20 * time.Millisecond)
	_ = c.SetReadDeadline(time.Now())
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want a timeout", err)
		}
	case <-time.After(time.Second):
		t.Fatal("a deadline in the past did not interrupt the read")
	}
	// A later deadline makes the connection usable again, although the
	// real one is still in the past.
	_ = c.SetReadDeadline(time.Now().Add(time.Hour))
	done = readOne(c)
	select {
	case err := <-done:
		t.Fatalf("read ended at once with %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	sendAndRead(t, peer, done)
}

func TestWriteTimesOutWhenThePeerDoesNotRead(t *testing.T) {
	s := New(tick)
	defer s.Stop()
	c, _ := pair(t, s)
	_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1<<20)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = c.Write(buf)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a write timeout", err)
	}
}

// Deadlines moving all the time while data flows: no call may fail, and
// every byte arrives (run with -race).
func TestBusyConnectionNeverTimesOutEarly(t *testing.T) {
	s := New(time.Millisecond) // sweep as often as possible to provoke the race
	defer s.Stop()
	c, peer := pair(t, s)
	const total = 4 << 20
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 4096)
		for sent := 0; sent < total; sent += len(buf) {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(buf); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
	}()
	got, err := io.CopyN(io.Discard, peer, total)
	wg.Wait()
	if err != nil || got != total {
		t.Fatalf("peer read %d bytes: %v", got, err)
	}
}

func TestClosedConnectionLeavesTheSweeper(t *testing.T) {
	s := New(tick)
	defer s.Stop()
	c, _ := pair(t, s)
	c.Close()
	if n := s.conns.Size(); n != 0 {
		t.Fatalf("%d connections still swept after Close", n)
	}
}
