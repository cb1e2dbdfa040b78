package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingStore sums every spend sent to it.
type countingStore struct {
	*MemoryStore
	sent atomic.Int64
}

func (c *countingStore) Sync(ctx context.Context, spends []Spend) ([]Bucket, error) {
	for _, s := range spends {
		c.sent.Add(int64(s.Spent))
	}
	return c.MemoryStore.Sync(ctx, spends)
}

// TestApplyRemoteNeverDiscardsSpending: requests admitted while admin
// changes of other instances (and catch-ups reading them again) are
// applied, and while the persister syncs, are each sent to the store
// exactly once. Run it with -race; it plays many rounds.
func TestApplyRemoteNeverDiscardsSpending(t *testing.T) {
	for round := range 50 {
		st := &countingStore{MemoryStore: NewMemoryStore()}
		l := New(Config{Capacity: 1 << 20, RatePerSec: 1e-6, Persist: true}, st)
		ctx := context.Background()
		var admitted atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if l.Allow([]byte("k"), time.Now().UnixNano()).Allowed {
						admitted.Add(1)
					}
				}
			})
		}
		for v := int64(1); v <= 30; v++ {
			row := Bucket{ClientID: "k", Capacity: 1 << 20, Tokens: 1 << 19, RatePerSec: 1e-6, LastRefill: time.Now(), Managed: true, Version: v}
			if err := l.ApplyRemote(ctx, row); err != nil {
				t.Fatal(err)
			}
			if err := l.ApplyRemote(ctx, row); err != nil { // a catch-up reading it again
				t.Fatal(err)
			}
			if _, err := l.Flush(ctx, time.Now().UnixNano()); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		wg.Wait()
		if _, err := l.FlushAll(ctx, time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
		if got, want := st.sent.Load(), admitted.Load(); got != want {
			t.Fatalf("round %d: %d requests admitted, %d sent to the store", round, want, got)
		}
	}
}

// TestAdminWritesKeepLaterSpending: a request admitted right after this
// instance's own PATCH, PUT or POST is charged on top of the written
// state, in memory and in the store, and the write's own notification
// coming back changes nothing.
func TestAdminWritesKeepLaterSpending(t *testing.T) {
	ctx := context.Background()
	now := t0
	st := driven(&now)
	l := New(Config{Capacity: 100, RatePerSec: 1e-6, Persist: true}, st)
	echo := func() {
		t.Helper()
		row, _ := st.Row("k")
		row.Tokens, row.LastRefill = refilled(row, time.Unix(0, now)), time.Unix(0, now)
		if err := l.ApplyRemote(ctx, row); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, want int64) {
		t.Helper()
		if b, _ := l.Get("k", now); b.WholeTokens() != want {
			t.Fatalf("%s: %d tokens in memory, want %d", what, b.WholeTokens(), want)
		}
		if _, err := l.FlushAll(ctx, now); err != nil {
			t.Fatal(err)
		}
		if row, _ := st.Row("k"); int64(row.Tokens+1e-9) != want {
			t.Fatalf("%s: %v tokens in the store, want %d", what, row.Tokens, want)
		}
	}
	if err := l.Create(ctx, Bucket{ClientID: "k", Capacity: 50, Tokens: 50, RatePerSec: 1e-6, LastRefill: time.Unix(0, now)}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.Allow([]byte("k"), now)
	}
	echo()
	check("after POST", 47)
	if err := l.SetTokens(ctx, "k", 20, now); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.Allow([]byte("k"), now)
	}
	echo()
	check("after PATCH", 15)
	l.Allow([]byte("k"), now) // unsynced when the PUT comes: in the state it writes
	if err := l.SetCapacity(ctx, "k", 30, 0, now); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		l.Allow([]byte("k"), now)
	}
	echo()
	check("after PUT", 10)
}

// TestRefundUnderConcurrency: requests charge two limits in turn and give
// the first token back when the second refuses; whatever the interleaving,
// the first limit is charged exactly the requests both admitted.
func TestRefundUnderConcurrency(t *testing.T) {
	for round := range 20 {
		wide, _ := newTest(10_000, 1e-3)
		narrow, _ := newTest(300, 1e-3)
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 200 {
					if !wide.Allow([]byte("k"), t0).Allowed {
						continue
					}
					if !narrow.Allow([]byte("k"), t0).Allowed {
						wide.Refund([]byte("k"))
						continue
					}
					admitted.Add(1)
				}
			})
		}
		wg.Wait()
		b, _ := wide.Get("k", t0)
		if used := 10_000 - b.WholeTokens(); used != admitted.Load() || admitted.Load() != 300 {
			t.Fatalf("round %d: %d admitted by both, the wide limit charged %d", round, admitted.Load(), used)
		}
		if row, _ := wide.buckets.Load("k"); row.spent.Load() != 300 {
			t.Fatalf("round %d: %d unsynced, want 300", round, row.spent.Load())
		}
	}
}
