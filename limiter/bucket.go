package limiter

import (
	"sync/atomic"
	"time"
)

// bucket is one client's token bucket in GCRA form. The whole token state is
// tat, the "theoretical arrival time": the moment the bucket would be full
// again. A request at now is admitted when max(tat, now)+interval-now <= burst
// (burst = capacity*interval), and tat then moves forward by one interval.
// A denial writes nothing, and tat never moves backwards on the request path.
//
// capacity and interval change only through the admin API. They are separate
// atomics, so a request racing an admin change may be charged once under the
// old parameters; it never corrupts tat.
type bucket struct {
	tat      atomic.Int64 // unix nanoseconds
	interval atomic.Int64 // nanoseconds per token
	capacity atomic.Int64

	key     string
	managed atomic.Bool // created or changed through the admin API: never evicted
	deleted atomic.Bool // removed from the map: the persister must skip it
	dirty   atomic.Bool // changed since the persister last saved it
	next    atomic.Pointer[bucket]
}

// Decision is what Allow answers. Durations are from the request's time.
type Decision struct {
	Allowed   bool
	Limit     int64         // bucket capacity
	Remaining int64         // whole tokens left after this request
	Retry     time.Duration // until one token is available (0 when allowed)
	Reset     time.Duration // until the bucket is full again
	// TableFull is set when the client had no bucket and none could be
	// created because EQUALIZER_MAX_BUCKETS buckets exist.
	TableFull bool
}

// take charges one token at now.
func (b *bucket) take(now int64) Decision {
	interval := b.interval.Load()
	capacity := b.capacity.Load()
	burst := interval * capacity
	for {
		tat := b.tat.Load()
		base := max(tat, now)
		next := base + interval
		if next-now > burst {
			return Decision{
				Limit: capacity,
				Retry: time.Duration(next - burst - now),
				Reset: time.Duration(base - now),
			}
		}
		if b.tat.CompareAndSwap(tat, next) {
			return Decision{
				Allowed:   true,
				Limit:     capacity,
				Remaining: (now + burst - next) / interval,
				Reset:     time.Duration(next - now),
			}
		}
	}
}

// tokens is the fractional number of tokens at now.
func (b *bucket) tokens(now int64) float64 {
	interval := b.interval.Load()
	capacity := b.capacity.Load()
	debt := max(b.tat.Load()-now, 0)
	return max(float64(capacity)-float64(debt)/float64(interval), 0)
}

// full reports whether the bucket has refilled completely at now.
func (b *bucket) full(now int64) bool { return b.tat.Load() <= now }

// tatFor is the tat that leaves tokens tokens at now.
func tatFor(now int64, capacity, interval int64, tokens float64) int64 {
	return now + int64((float64(capacity)-tokens)*float64(interval))
}

// intervalFor converts a rate in tokens per second to nanoseconds per token.
func intervalFor(ratePerSec float64) int64 {
	return max(int64(float64(time.Second)/ratePerSec), 1)
}
