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
// The struct is kept at 48 bytes (one size class) because a million of them
// must fit in memory: the parameters are shared, the flags share one word.
type bucket struct {
	tat    atomic.Int64           // unix nanoseconds
	params atomic.Pointer[params] // shared by every default bucket
	key    string
	flags  atomic.Uint32
	spent  atomic.Uint32          // tokens admitted since the last sync (fits the padding)
	next   atomic.Pointer[bucket] // link in the dirty list
}

// params are a bucket's capacity and refill interval. They are immutable:
// an admin change swaps in a new value, so a request sees either the old
// pair or the new one, never a mix.
type params struct {
	capacity int64
	rate     float64 // tokens per second, as configured (interval is rounded)
	interval int64   // nanoseconds per token
	// slack absorbs clock skew between goroutines: requests are stamped
	// when they were read, so a request may carry a time a few
	// nanoseconds older than one already charged. Without slack such a
	// request would find the last token of a full burst a hair short.
	// It is under 1/16 of a token, so it never admits an extra request at
	// one instant; it lets one request through at most slack early.
	slack int64
	// version is the admin version of the row these parameters came from.
	version int64
}

func newParams(capacity int64, ratePerSec float64) *params {
	interval := intervalFor(ratePerSec)
	return &params{capacity: capacity, rate: ratePerSec, interval: interval, slack: min(interval/16, int64(time.Millisecond))}
}

const (
	flagDirty   uint32 = 1 << iota // changed since the persister last saved it
	flagManaged                    // created or changed through the admin API: never evicted
	flagDeleted                    // removed from the map: the persister must skip it
	flagStored                     // the store has a row for it: its syncs may wait
)

func (b *bucket) has(f uint32) bool { return b.flags.Load()&f != 0 }

// setFlag sets f and reports whether it was clear before.
func (b *bucket) setFlag(f uint32) bool { return b.flags.Or(f)&f == 0 }

func (b *bucket) clearFlag(f uint32) { b.flags.And(^f) }

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
	p := b.params.Load()
	burst := p.interval * p.capacity
	for {
		tat := b.tat.Load()
		base := max(tat, now)
		next := base + p.interval
		if next-now > burst+p.slack {
			return Decision{
				Limit: p.capacity,
				Retry: time.Duration(next - burst - now),
				Reset: time.Duration(base - now),
			}
		}
		if b.tat.CompareAndSwap(tat, next) {
			return Decision{
				Allowed:   true,
				Limit:     p.capacity,
				Remaining: (now + burst - next) / p.interval,
				Reset:     time.Duration(next - now),
			}
		}
	}
}

// takeWithin is take for a limit with a delay: a request whose token comes
// within wait is admitted too, reserving that token (later requests queue
// behind it); the Decision's Retry is then how long it must wait first.
func (b *bucket) takeWithin(now, wait int64) Decision {
	p := b.params.Load()
	burst := p.interval * p.capacity
	for {
		tat := b.tat.Load()
		base := max(tat, now)
		next := base + p.interval
		early := next - now - burst - p.slack // > 0: the token comes that much later
		if early > wait {
			return Decision{
				Limit: p.capacity,
				Retry: time.Duration(next - burst - now),
				Reset: time.Duration(base - now),
			}
		}
		if b.tat.CompareAndSwap(tat, next) {
			return Decision{
				Allowed:   true,
				Limit:     p.capacity,
				Remaining: max((now+burst-next)/p.interval, 0),
				Reset:     time.Duration(next - now),
				Retry:     time.Duration(max(next-burst-now, 0)),
			}
		}
	}
}

// tokens is the fractional number of tokens at now.
func (b *bucket) tokens(now int64) float64 { return max(b.left(b.params.Load(), now), 0) }

// left is the tokens at now, negative in debt, unlike tokens.
func (b *bucket) left(p *params, now int64) float64 {
	return float64(p.capacity) - float64(max(b.tat.Load()-now, 0))/float64(p.interval)
}

// full reports whether the bucket has refilled completely at now.
func (b *bucket) full(now int64) bool { return b.tat.Load() <= now }

// tatFor is the tat that leaves tokens tokens at now.
func tatFor(now int64, p *params, tokens float64) int64 {
	return now + int64((float64(p.capacity)-tokens)*float64(p.interval))
}

// intervalFor converts a rate in tokens per second to nanoseconds per token.
func intervalFor(ratePerSec float64) int64 {
	return max(int64(float64(time.Second)/ratePerSec), 1)
}
