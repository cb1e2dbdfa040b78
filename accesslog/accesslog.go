// Package accesslog writes access log lines through a bounded lock-free
// queue to a file or stdout, from one goroutine: a request never waits for
// the disk. When the queue is full, lines are dropped and counted. Reopen
// (SIGUSR1) makes the writer reopen its file, for logrotate.
package accesslog

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// Slots is the queue's length in lines.
const Slots = 1 << 14

// pollEvery is how long the writer waits when the queue is empty: a line
// reaches the file at most this late.
const pollEvery = 20 * time.Millisecond

// maxLine bounds a slot's memory: a longer line is cut (it still ends in
// a newline, so the file stays one line per request).
const maxLine = 8 << 10

// Log is safe for concurrent use.
type Log struct {
	path string                 // "" for stdout; the writer goroutine's alone
	next atomic.Pointer[string] // a new target from Retarget, taken at the next reopen
	q    queue
	// Dropped counts lines the queue had no room for.
	dropped atomic.Uint64
	reopen  atomic.Bool
	wake    chan struct{} // Reopen's nudge to the writer
	out     io.Writer
	file    *os.File
	done    chan struct{}
	errs    func(error) // reports write and reopen errors
}

// Open returns a Log writing to target: "stdout" or a file path (created,
// appended to). report is told of write errors (throttle it).
func Open(target string, report func(error)) (*Log, error) {
	l := &Log{wake: make(chan struct{}, 1), done: make(chan struct{}), errs: report}
	l.q.init(Slots)
	if target == "stdout" {
		l.out = os.Stdout
		return l, nil
	}
	l.path = target
	if err := l.openFile(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) openFile() error {
	if l.path == "" {
		if l.file != nil {
			l.file.Close()
		}
		l.file, l.out = nil, os.Stdout
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("access log: %w", err)
	}
	if l.file != nil {
		l.file.Close()
	}
	l.file, l.out = f, f
	return nil
}

// Retarget makes the writer switch to target ("stdout" or a path) at its
// next round, as Reopen does: a configuration reload.
func (l *Log) Retarget(target string) {
	l.next.Store(&target)
	l.Reopen()
}

// Write queues one line (p must end in a newline). It never blocks: when
// the queue is full the line is dropped and counted. p is copied.
func (l *Log) Write(p []byte) (int, error) {
	if !l.q.push(p) {
		l.dropped.Add(1)
	}
	return len(p), nil
}

// DroppedFunc returns Dropped for /metrics, or nil on a nil Log (off).
func (l *Log) DroppedFunc() func() uint64 {
	if l == nil {
		return nil
	}
	return l.Dropped
}

// Dropped is how many lines were dropped because the queue was full.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Reopen makes the writer close and reopen the file before its next
// write: logrotate moved the old one away.
func (l *Log) Reopen() {
	l.reopen.Store(true)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Run writes queued lines until ctx is done, then writes what is left
// and returns. Call it once.
func (l *Log) Run(ctx context.Context) {
	defer close(l.done)
	w := bufio.NewWriterSize(l.out, 64<<10)
	var line []byte
	idle := time.NewTimer(pollEvery)
	defer idle.Stop()
	for {
		if l.reopen.Swap(false) {
			w.Flush() //nolint:errcheck // reported below if it matters
			if t := l.next.Swap(nil); t != nil {
				l.path = *t
				if *t == "stdout" {
					l.path = ""
				}
			}
			if err := l.openFile(); err != nil {
				l.errs(err)
			} else {
				w.Reset(l.out)
			}
		}
		n := 0
		for {
			var ok bool
			line, ok = l.q.pop(line[:0])
			if !ok {
				break
			}
			if _, err := w.Write(line); err != nil {
				l.errs(err)
			}
			n++
		}
		if n > 0 {
			if err := w.Flush(); err != nil {
				l.errs(err)
				w.Reset(l.out)
			}
			if n >= Slots/4 {
				continue // falling behind: go on at once
			}
		}
		// Wait a little before the next round, rather than being woken
		// per line or flushing a few lines at a time: under load each
		// round then writes a few hundred lines in a few big writes.
		select {
		case <-ctx.Done():
			for {
				var ok bool
				if line, ok = l.q.pop(line[:0]); !ok {
					break
				}
				w.Write(line) //nolint:errcheck
			}
			if err := w.Flush(); err != nil {
				l.errs(err)
			}
			if l.file != nil {
				l.file.Close()
			}
			return
		case <-l.wake:
		case <-idle.C:
		}
		idle.Reset(pollEvery)
	}
}

// Wait returns when Run has written everything and returned.
func (l *Log) Wait() { <-l.done }
