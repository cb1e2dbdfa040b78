package limiter

import (
	"context"
	"testing"
	"time"
)

// TestSyncKeepsTheRefillUsedBetweenSyncs: a key driven at twice its rate
// through 1 or 3 instances gets its rate, also when rate x sync interval
// (12.8 tokens here) is more than the capacity (8). A store that assumed
// every token was spent at the sync would cap the refill first and charge
// the spending after: one instance admitted 1,001 of 1,288 that way. With
// 3 instances the overshoot of one interval is more than one capacity; a
// debt bound of one capacity forgave the rest (1,366 admitted), one of a
// capacity plus a second of refill lets it be paid back.
func TestSyncKeepsTheRefillUsedBetweenSyncs(t *testing.T) {
	ctx := context.Background()
	const rate, capacity, seconds = 64, 8, 20
	const step = 5 * int64(time.Millisecond)
	for _, instances := range []int{1, 3} {
		now := t0
		st := driven(&now)
		var insts []*Limiter
		for range instances {
			insts = append(insts, New(Config{Capacity: capacity, RatePerSec: rate, Persist: true, DeferRounds: 4}, st))
		}
		admitted := 0
		for i := int64(0); i < seconds*int64(time.Second)/step; i++ {
			now = t0 + i*step
			// 128 requests/s in all, spread over the instances in turn.
			if i%(int64(time.Second)/step/(2*rate)) == 0 && insts[i%int64(instances)].Allow([]byte("k"), now).Allowed {
				admitted++
			}
			for j, in := range insts {
				if (i+int64(j)*13)%40 == 0 { // every 200 ms, not in step
					if _, err := in.Flush(ctx, now); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		ideal := capacity + rate*seconds
		t.Logf("%d instances: %d admitted, ideal %d", instances, admitted, ideal)
		if d := float64(admitted-ideal) / float64(ideal); d < -0.03 || d > 0.03 {
			t.Fatalf("%d instances: %d admitted, more than 3%% from the ideal %d", instances, admitted, ideal)
		}
	}
}
