// Package logthrottle logs repeated errors at most once per period, with the
// number of lines it skipped, so a dead backend under load does not flood
// the log. It is lock-free and safe for concurrent use.
package logthrottle

import (
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Logger writes at most one line per Every.
type Logger struct {
	Log     zerolog.Logger
	Every   time.Duration
	next    atomic.Int64
	skipped atomic.Uint64
}

// New returns a Logger that writes to log at most once per every.
func New(log zerolog.Logger, every time.Duration) *Logger {
	return &Logger{Log: log, Every: every}
}

// Event returns an error event to fill and send, with the count of skipped
// lines attached, or nil when this period already had its line. A nil
// *zerolog.Event is safe to use and writes nothing.
func (t *Logger) Event() *zerolog.Event {
	now := time.Now().UnixNano()
	next := t.next.Load()
	if now < next || !t.next.CompareAndSwap(next, now+int64(t.Every)) {
		t.skipped.Add(1)
		return nil
	}
	return t.Log.Error().Uint64("suppressed", t.skipped.Swap(0))
}
