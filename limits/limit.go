// Package limits holds the named rate limits of the configuration file:
// each is a token bucket limiter (one bucket per key), the recipe of a
// request's key, and a mode: enforce (refuse with 429) or shadow (count
// what it would refuse, refuse nothing). Routes list the limits that
// apply to them; the proxy charges them all or none.
package limits

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gopher-equalizer/limiter"
)

// Mode is how a limit acts on a request it finds no token for.
type Mode uint8

const (
	Enforce Mode = iota // refuse it: 429
	Shadow              // let it through, count would_limit
)

func (m Mode) String() string {
	if m == Shadow {
		return "shadow"
	}
	return "enforce"
}

// Result is one decision of a limit, for equalizer_limit_decisions_total.
type Result uint8

const (
	Allowed    Result = iota // a token was charged
	Limited                  // refused (429)
	Delayed                  // a token reserved, waited for, then let through
	WouldLimit               // a shadow limit found no token; let through
	NumResults
)

// ResultNames are the label values of the results, in order.
var ResultNames = [NumResults]string{"allowed", "limited", "delayed", "would_limit"}

// MaxWaiting bounds the requests one limit keeps waiting for their token
// (delay) on an instance; past it they get 429.
const MaxWaiting = 4096

// Limit is one named limit. Its limiter, key and mode never change; a
// reload that changes them makes a new Limit (the default bucket of a
// limit whose key stays moves with SetDefaults, as the top-level one).
type Limit struct {
	Name string
	// Lim holds the buckets, one per key; nil for a concurrency limit.
	Lim *limiter.Limiter
	// Concurrency, when above 0, makes this a concurrency limit: at most
	// this many requests of a key in flight (InFlight counts them).
	Concurrency int64
	InFlight    *InFlight
	// Key derives a request's key; nil: the proxy's client key (the limit
	// "default", EQUALIZER_CLIENT_KEY).
	Key *Key
	// KeyText is the key as configured, for /limits.
	KeyText  string
	Mode     Mode
	Capacity int64
	// Rate is the refill in tokens per second; RateText as configured.
	Rate     float64
	RateText string
	// Delay: a request whose token comes within it waits for it instead
	// of a 429 (nginx limit_req delay=); 0: none.
	Delay time.Duration
	// Waiting counts the requests waiting for their token.
	Waiting atomic.Int64
	// Decisions count this limit's results.
	Decisions [NumResults]atomic.Uint64
}

// Window is the time the whole capacity takes to refill, in whole seconds
// (at least 1): the w of the RateLimit-Policy field.
func (l *Limit) Window() int64 {
	return max(int64(float64(l.Capacity)/l.Rate+0.5), 1)
}

// ParseRate reads "N/s", "N/m", "N/h", "N/d" or "N/<duration>" (100/1s,
// 5/30s) into tokens per second.
func ParseRate(s string) (float64, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	count, err := strconv.ParseFloat(n, 64)
	if !ok || err != nil || !(count > 0) || count > 1e12 {
		return 0, fmt.Errorf("%q: want N/s, N/m, N/h, N/d or N/<duration> with N > 0, such as 100/s or 5/m", s)
	}
	var d time.Duration
	switch per {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	case "d":
		d = 24 * time.Hour
	default:
		d, err = time.ParseDuration(per)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("%q: the period must be s, m, h, d or a duration such as 30s", s)
		}
	}
	return count / d.Seconds(), nil
}
