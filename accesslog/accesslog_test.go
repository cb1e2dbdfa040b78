package accesslog

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFullQueueDropsInsteadOfBlocking: the file is a FIFO nobody reads,
// so the writer blocks; producers must go on at once, counting drops.
func TestFullQueueDropsInsteadOfBlocking(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l, err := Open(fifo, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go l.Run(ctx)
	line := []byte(fmt.Sprintf("{\"pad\":%q}\n", make([]byte, 200)))
	const n = 4 * Slots
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n / 4 {
				l.Write(line) //nolint:errcheck
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("%d writes took %v: producers waited for the disk", n, took)
	}
	if d := l.Dropped(); d < n-Slots-(1<<10) {
		t.Fatalf("dropped %d of %d with a queue of %d and a blocked writer", d, n, Slots)
	}
	// Drain the FIFO so the writer can finish and return.
	go func() {
		buf := make([]byte, 1<<16)
		for {
			if _, err := r.Read(buf); err != nil && err != syscall.EAGAIN {
				return
			}
		}
	}()
	cancel()
	l.Wait()
}

// TestLinesInOrderReopenAndFinalWrite: lines arrive whole and in order,
// Reopen moves the writer to a new file after a rename, and a stop writes
// what is queued.
func TestLinesInOrderReopenAndFinalWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := Open(path, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go l.Run(ctx)
	for i := range 100 {
		l.Write([]byte(fmt.Sprintf("line %d\n", i))) //nolint:errcheck
	}
	waitLines(t, path, 100)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Reopen()
	waitFile(t, path)
	for i := 100; i < 150; i++ {
		l.Write([]byte(fmt.Sprintf("line %d\n", i))) //nolint:errcheck
	}
	cancel()
	l.Wait()
	old, cur := readLines(t, path+".1"), readLines(t, path)
	if len(old) != 100 || len(cur) != 50 || cur[0] != "line 100" || cur[49] != "line 149" {
		t.Fatalf("rotated file %d lines, new file %d lines (%q...)", len(old), len(cur), cur)
	}
	for i, s := range old {
		if s != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d is %q", i, s)
		}
	}
	if l.Dropped() != 0 {
		t.Fatalf("%d dropped", l.Dropped())
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		out = append(out, s.Text())
	}
	return out
}

func waitLines(t *testing.T, path string, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(readLines(t, path)) < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines, want %d", path, len(readLines(t, path)), n)
		}
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not reopened", path)
		}
	}
}
