package limits

import (
	"context"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/puzpuzpuz/xsync/v4"
)

// InFlight counts the requests of each key in flight for a concurrency
// limit (nginx limit_conn), on this instance: from the start of a request
// to the end of its response body, or of its tunnel. Acquire and Release
// take no lock; a key's first request allocates its counter. Counters back
// at zero are swept away, so idle keys cost nothing.
type InFlight struct {
	counts *xsync.Map[string, *atomic.Int64]
	total  atomic.Int64
}

// NewInFlight returns an empty set of counters.
func NewInFlight() *InFlight { return &InFlight{counts: xsync.NewMap[string, *atomic.Int64]()} }

// Acquire counts one more request of key if fewer than max are in flight,
// and returns the counter to Release; nil when max are in flight already.
func (f *InFlight) Acquire(key []byte, max int64) *atomic.Int64 {
	c, ok := f.counts.Load(unsafe.String(unsafe.SliceData(key), len(key)))
	if !ok {
		c, _ = f.counts.LoadOrStore(string(key), &atomic.Int64{})
	}
	if c.Add(1) > max {
		c.Add(-1)
		return nil
	}
	f.total.Add(1)
	return c
}

// Release ends what Acquire counted.
func (f *InFlight) Release(c *atomic.Int64) {
	c.Add(-1)
	f.total.Add(-1)
}

// Total is the requests in flight across keys.
func (f *InFlight) Total() int64 { return f.total.Load() }

// Keys is how many keys have a counter.
func (f *InFlight) Keys() int { return f.counts.Size() }

// RunSweeper drops counters at zero every period until ctx ends. A request
// that loaded a counter just before it was dropped counts on it all the
// same, and its release balances it; the next request of that key makes a
// new one: for one moment that key may have one request more in flight.
func (f *InFlight) RunSweeper(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.counts.Range(func(k string, c *atomic.Int64) bool {
				if c.Load() <= 0 {
					f.counts.Compute(k, func(cur *atomic.Int64, loaded bool) (*atomic.Int64, xsync.ComputeOp) {
						if loaded && cur == c && c.Load() <= 0 {
							return nil, xsync.DeleteOp
						}
						return cur, xsync.CancelOp
					})
				}
				return true
			})
		}
	}
}
