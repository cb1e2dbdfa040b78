package limiter

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"
)

// TestColdKeysOnSeveralInstances plays N instances on one store (the
// driven MemoryStore, which computes rows as pgstore's statement does) and
// 1,000 keys none of them has seen, each offered 200 requests/s round
// robin over the instances for 20 s, capacity 5 and 1/s, syncs every
// 200 ms. Every instance starts each key with a full bucket, so together
// they admit up to N-1 capacities too many before the first sync; the
// debt is paid back, so each key ends within 5 % of the limit.
func TestColdKeysOnSeveralInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("4 million requests per instance count")
	}
	const (
		keys     = 1000
		step     = 5 * int64(time.Millisecond) // 200 requests/s per key
		interval = 200 * int64(time.Millisecond)
		duration = 20 * int64(time.Second)
	)
	names := make([][]byte, keys)
	for k := range names {
		names[k] = fmt.Appendf(nil, "key-%d", k)
	}
	for _, n := range []int{1, 2, 3, 5} {
		now := t0
		st := driven(&now)
		insts := make([]*Limiter, n)
		for i := range insts {
			insts[i] = New(Config{Capacity: 5, RatePerSec: 1, Persist: true}, st)
		}
		admitted := make([]int, keys)
		ctx := context.Background()
		for tick := int64(0); tick < duration/step; tick++ {
			now = t0 + tick*step
			l := insts[int(tick)%n]
			for k, key := range names {
				if l.Allow(key, now).Allowed {
					admitted[k]++
				}
			}
			if (tick*step)%interval == 0 {
				for _, l := range insts {
					if _, err := l.Flush(ctx, now); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		want := 5 + float64(duration)/float64(time.Second)
		total, worst := 0, 0.0
		for _, a := range admitted {
			total += a
			worst = max(worst, math.Abs(float64(a)-want)/want)
		}
		t.Logf("%d instances: mean %.2f admitted per key, ideal %.0f, worst key off by %.1f%%", n, float64(total)/keys, want, 100*worst)
		if worst > 0.05 {
			t.Errorf("%d instances: a key was off by %.1f%%, want within 5%%", n, 100*worst)
		}
	}
}
