package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const sec = int64(time.Second)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

func newTest(capacity int64, rate float64) (*Limiter, *MemoryStore) {
	st := NewMemoryStore()
	return New(Config{Capacity: capacity, RatePerSec: rate, Persist: true}, st), st
}

func TestBucketArithmetic(t *testing.T) {
	l, _ := newTest(3, 1) // 3 tokens, one per second
	key := []byte("c")
	f := func(at int64, allowed bool, remaining int64) {
		t.Helper()
		d := l.Allow(key, at)
		if d.Allowed != allowed || d.Remaining != remaining || d.Limit != 3 {
			t.Fatalf("at %v: %+v, want allowed=%v remaining=%d", time.Duration(at-t0), d, allowed, remaining)
		}
	}
	f(t0, true, 2)
	f(t0, true, 1)
	f(t0, true, 0)
	f(t0, false, 0)
	d := l.Allow(key, t0)
	if d.Retry != time.Second || d.Reset != 3*time.Second {
		t.Fatalf("denied: retry %v reset %v, want 1s and 3s", d.Retry, d.Reset)
	}
	f(t0+sec/2, false, 0) // half a token
	if d := l.Allow(key, t0+sec/2); d.Retry != time.Second/2 {
		t.Fatalf("retry after half a second: %v", d.Retry)
	}
	f(t0+sec, true, 0)    // one token refilled, spent
	f(t0+10*sec, true, 2) // refill stops at capacity
	f(t0+10*sec, true, 1)
	// A request stamped earlier than the bucket's state gets no refill and
	// does not move the state backwards.
	f(t0+5*sec, false, 0)
	f(t0+11*sec, true, 1)
}

func TestTokensAndSnapshot(t *testing.T) {
	l, _ := newTest(10, 2)
	for range 4 {
		l.Allow([]byte("c"), t0)
	}
	b, ok := l.Get("c", t0+sec/4) // 6 left plus half a token
	if !ok || b.WholeTokens() != 6 || b.Tokens != 6.5 || b.Capacity != 10 || b.RatePerSec != 2 || b.Managed {
		t.Fatalf("snapshot %+v", b)
	}
	if _, ok := l.Get("other", t0); ok {
		t.Fatal("unknown client has a bucket")
	}
}

func TestExactUnderConcurrency(t *testing.T) {
	for _, c := range []struct{ n, capacity int }{{1000, 100}, {50, 100}, {5000, 4999}} {
		l, _ := newTest(int64(c.capacity), 0.001) // no refill within the test
		var admitted atomic.Int64
		var wg sync.WaitGroup
		per := c.n / 50
		for g := range 50 {
			wg.Go(func() {
				for i := range per {
					if l.Allow([]byte("hot"), t0+int64(g*per+i)%7).Allowed {
						admitted.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if want := int64(min(c.n, c.capacity)); admitted.Load() != want {
			t.Errorf("n=%d capacity=%d: admitted %d, want %d", c.n, c.capacity, admitted.Load(), want)
		}
	}
}

func TestDirtyTrackingAndFlush(t *testing.T) {
	l, st := newTest(5, 1)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "a", "c", "a"} {
		l.Allow([]byte(k), t0)
	}
	if n := l.DirtyLen(); n != 3 {
		t.Fatalf("dirty %d, want 3 (each bucket once)", n)
	}
	n, err := l.Flush(ctx, t0)
	if err != nil || n != 3 {
		t.Fatalf("flush %d %v", n, err)
	}
	if row, _ := st.Row("a"); row.WholeTokens() != 2 || row.Capacity != 5 || row.Managed {
		t.Fatalf("saved a = %+v", row)
	}
	// a is past half empty: it is synced once more to see the others'
	// spending, then left alone.
	if n, _ := l.Flush(ctx, t0); n != 1 {
		t.Fatalf("second flush synced %d, want 1 (a, near its limit)", n)
	}
	if n, _ := l.Flush(ctx, t0); n != 0 {
		t.Fatalf("third flush synced %d, want 0", n)
	}
	l.Allow([]byte("b"), t0)
	if n, _ := l.Flush(ctx, t0); n != 1 {
		t.Fatalf("flush after one change saved %d", n)
	}
	if row, _ := st.Row("b"); row.WholeTokens() != 3 {
		t.Fatalf("b = %+v", row)
	}
}

// failingStore fails every call while down is set.
type failingStore struct {
	*MemoryStore
	down atomic.Bool
}

var errDown = errors.New("store down")

func (f *failingStore) Save(ctx context.Context, b Bucket) (int64, error) {
	if f.down.Load() {
		return 0, errDown
	}
	return f.MemoryStore.Save(ctx, b)
}

func (f *failingStore) Delete(ctx context.Context, id string) (int64, error) {
	if f.down.Load() {
		return 0, errDown
	}
	return f.MemoryStore.Delete(ctx, id)
}

func (f *failingStore) Sync(ctx context.Context, s []Spend) ([]Bucket, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.MemoryStore.Sync(ctx, s)
}

func TestFlushKeepsDirtyWhileStoreIsDown(t *testing.T) {
	st := &failingStore{MemoryStore: NewMemoryStore()}
	l := New(Config{Capacity: 5, RatePerSec: 1, Persist: true}, st)
	ctx := context.Background()
	st.down.Store(true)
	l.Allow([]byte("a"), t0)
	l.Allow([]byte("b"), t0)
	if _, err := l.Flush(ctx, t0); !errors.Is(err, errDown) {
		t.Fatalf("flush: %v", err)
	}
	l.Allow([]byte("a"), t0)
	if n := l.DirtyLen(); n != 2 {
		t.Fatalf("dirty after failed flush: %d, want 2", n)
	}
	st.down.Store(false)
	if n, err := l.Flush(ctx, t0); n != 2 || err != nil {
		t.Fatalf("flush after recovery: %d %v", n, err)
	}
	if row, _ := st.Row("a"); row.WholeTokens() != 3 {
		t.Fatalf("a after outage = %+v, want 3 tokens", row)
	}
}

func TestAdminOperations(t *testing.T) {
	st := &failingStore{MemoryStore: NewMemoryStore()}
	l := New(Config{Capacity: 100, RatePerSec: 100, Persist: true}, st)
	ctx := context.Background()
	row := Bucket{ClientID: "x", Capacity: 10, Tokens: 4, RatePerSec: 1, LastRefill: time.Unix(0, t0)}
	if err := l.Create(ctx, row); err != nil {
		t.Fatal(err)
	}
	if err := l.Create(ctx, row); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if saved, ok := st.Row("x"); !ok || !saved.Managed || saved.Tokens != 4 {
		t.Fatalf("create did not reach the store: %+v", saved)
	}
	if b, _ := l.Get("x", t0); b.WholeTokens() != 4 || !b.Managed {
		t.Fatalf("memory after create: %+v", b)
	}
	// Capacity below the tokens cuts them.
	if err := l.SetCapacity(ctx, "x", 2, 0, t0); err != nil {
		t.Fatal(err)
	}
	if b, _ := l.Get("x", t0); b.Capacity != 2 || b.WholeTokens() != 2 || b.RatePerSec != 1 {
		t.Fatalf("after PUT: %+v", b)
	}
	if err := l.SetTokens(ctx, "x", 3, t0); !errors.Is(err, ErrTokensAboveCapacity) {
		t.Fatalf("tokens above capacity: %v", err)
	}
	// Exhaust, then PATCH tokens to 1: exactly one more request passes.
	l.Allow([]byte("x"), t0)
	l.Allow([]byte("x"), t0)
	if l.Allow([]byte("x"), t0).Allowed {
		t.Fatal("exhausted bucket admitted")
	}
	if err := l.SetTokens(ctx, "x", 1, t0); err != nil {
		t.Fatal(err)
	}
	if !l.Allow([]byte("x"), t0).Allowed || l.Allow([]byte("x"), t0).Allowed {
		t.Fatal("PATCH tokens=1 did not admit exactly one request")
	}
	// A failed store write changes nothing in memory.
	st.down.Store(true)
	if err := l.SetCapacity(ctx, "x", 50, 0, t0); !errors.Is(err, errDown) {
		t.Fatalf("store down: %v", err)
	}
	if err := l.Delete(ctx, "x"); !errors.Is(err, errDown) {
		t.Fatalf("store down: %v", err)
	}
	if err := l.Create(ctx, Bucket{ClientID: "y", Capacity: 1, RatePerSec: 1}); !errors.Is(err, errDown) {
		t.Fatalf("store down: %v", err)
	}
	if b, ok := l.Get("x", t0); !ok || b.Capacity != 2 {
		t.Fatalf("memory changed by a failed write: %+v", b)
	}
	if _, ok := l.Get("y", t0); ok {
		t.Fatal("failed create left a bucket")
	}
	st.down.Store(false)
	if err := l.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Row("x"); ok {
		t.Fatal("delete did not reach the store")
	}
	if err := l.Delete(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// The client's next request gets a fresh default bucket.
	if d := l.Allow([]byte("x"), t0); !d.Allowed || d.Limit != 100 {
		t.Fatalf("after delete: %+v", d)
	}
}

func TestCreateReplacesABucketMadeByARequest(t *testing.T) {
	l, st := newTest(100, 100)
	ctx := context.Background()
	// The admin write is checked, then a request creates a default bucket,
	// then the write lands: the store plays the request in between.
	racing := &racingStore{MemoryStore: st, during: func() { l.Allow([]byte("z"), t0) }}
	l.store = racing
	if err := l.Create(ctx, Bucket{ClientID: "z", Capacity: 3, Tokens: 3, RatePerSec: 1, LastRefill: time.Unix(0, t0)}); err != nil {
		t.Fatal(err)
	}
	if b, _ := l.Get("z", t0); b.Capacity != 3 || !b.Managed || l.Len() != 1 {
		t.Fatalf("bucket %+v, %d buckets", b, l.Len())
	}
	l.store = st
	if _, err := l.Flush(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if row, _ := st.Row("z"); row.Capacity != 3 || !row.Managed {
		t.Fatalf("a flush of the replaced default bucket overwrote the admin row: %+v", row)
	}
}

type racingStore struct {
	*MemoryStore
	during func()
}

func (r *racingStore) Save(ctx context.Context, b Bucket) (int64, error) {
	if r.during != nil {
		r.during()
		r.during = nil
	}
	return r.MemoryStore.Save(ctx, b)
}

func TestList(t *testing.T) {
	l, _ := newTest(5, 1)
	for i := 99; i >= 0; i-- {
		l.Allow(fmt.Appendf(nil, "k%03d", i), t0)
	}
	page := l.List(10, 5, t0)
	if len(page) != 5 || page[0].ClientID != "k010" || page[4].ClientID != "k014" {
		t.Fatalf("page %+v", page)
	}
	if got := l.List(98, 10, t0); len(got) != 2 || got[1].ClientID != "k099" {
		t.Fatalf("last page %+v", got)
	}
	if got := l.List(200, 10, t0); got == nil || len(got) != 0 {
		t.Fatalf("past the end: %#v", got)
	}
	if deep := l.List(5000, 1, t0); len(deep) != 0 {
		t.Fatalf("deep page %+v", deep)
	}
}

func TestEvictionKeepsMemoryBounded(t *testing.T) {
	st := NewMemoryStore()
	l := New(Config{Capacity: 2, RatePerSec: 1, MaxBuckets: 100, Persist: true}, st)
	ctx := context.Background()
	if err := l.Create(ctx, Bucket{ClientID: "admin", Capacity: 5, Tokens: 5, RatePerSec: 1, LastRefill: time.Unix(0, t0)}); err != nil {
		t.Fatal(err)
	}
	for i := range 99 {
		l.Allow(fmt.Appendf(nil, "spray-%d", i), t0)
	}
	if d := l.Allow([]byte("one-too-many"), t0); !d.TableFull || d.Allowed {
		t.Fatalf("at the limit: %+v", d)
	}
	l.Flush(ctx, t0)
	// Ten seconds later every automatic bucket is full again.
	if n := l.Sweep(t0 + 10*sec); n == 0 || l.Len() >= 90 {
		t.Fatalf("sweep evicted %d, %d buckets left", n, l.Len())
	}
	if _, ok := l.Get("admin", t0); !ok {
		t.Fatal("a managed bucket was evicted")
	}
	if l.Evictions() == 0 || l.RefusedFull() != 1 {
		t.Fatalf("counters: evictions %d refused %d", l.Evictions(), l.RefusedFull())
	}
	if d := l.Allow([]byte("newcomer"), t0+10*sec); !d.Allowed {
		t.Fatalf("newcomer after sweep: %+v", d)
	}
	// Eviction is memory-only: every row stays in the store.
	before := st.Len()
	if _, err := l.Flush(ctx, t0+10*sec); err != nil {
		t.Fatal(err)
	}
	if st.Len() < before {
		t.Fatalf("store rows %d -> %d: eviction deleted rows", before, st.Len())
	}
	// When no bucket is full, automatic buckets are evicted anyway.
	l2 := New(Config{Capacity: 2, RatePerSec: 1, MaxBuckets: 10}, NewMemoryStore())
	for i := range 10 {
		l2.Allow(fmt.Appendf(nil, "busy-%d", i), t0)
	}
	if n := l2.Sweep(t0); n == 0 || l2.Len() >= 9 {
		t.Fatalf("second-pass sweep evicted %d, %d left", n, l2.Len())
	}
}

func TestWithoutPersistNothingAccumulates(t *testing.T) {
	l := New(Config{Capacity: 2, RatePerSec: 1, MaxBuckets: 100}, NewMemoryStore())
	for i := range 100 {
		l.Allow(fmt.Appendf(nil, "spray-%d", i), t0)
	}
	if n := l.Sweep(t0 + 10*sec); n == 0 {
		t.Fatal("nothing evicted")
	}
	// The dirty list may not hold evicted buckets: with no persister to
	// drain it, it would grow forever.
	if n := l.DirtyLen(); n != 0 {
		t.Fatalf("dirty list holds %d buckets without a persister", n)
	}
}

func TestRestoreRefillsForDowntime(t *testing.T) {
	l, _ := newTest(100, 100)
	l.Restore(Bucket{ClientID: "r", Capacity: 10, Tokens: 2, RatePerSec: 1, LastRefill: time.Unix(0, t0), Managed: true})
	if b, _ := l.Get("r", t0+3*sec); b.WholeTokens() != 5 || !b.Managed {
		t.Fatalf("restored bucket 3 s later: %+v", b)
	}
	if b, _ := l.Get("r", t0+time.Hour.Nanoseconds()); b.WholeTokens() != 10 {
		t.Fatalf("restored bucket an hour later: %+v", b)
	}
}

func TestRunPersisterFinalFlush(t *testing.T) {
	st := NewMemoryStore()
	l := New(Config{Capacity: 5, RatePerSec: 1, Persist: true}, st)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.RunPersister(ctx, time.Hour, time.Second, func(error) {}) }()
	l.Allow([]byte("a"), time.Now().UnixNano())
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if row, ok := st.Row("a"); !ok || row.WholeTokens() != 4 {
		t.Fatalf("final flush: %+v %v", row, ok)
	}
}

// TestEvictionFloodCannotResetADrainedBucket floods the table with new keys
// (one IPv6 /64 holds enough) to get a drained bucket evicted: its client
// must not come back to a full bucket. Which buckets a sweep evicts depends
// on the map's random hash order, so the flood is repeated on fresh
// limiters until the drained bucket was among the evicted (each try has
// about a one in six chance; 200 tries all missing is below 1e-15).
func TestEvictionFloodCannotResetADrainedBucket(t *testing.T) {
	const maxBuckets = 50
	victim := []byte("2001:db8::1")
	for try := 0; try < 200; try++ {
		// 100 tokens, one per hour: the drained victim owes 100 hours, a
		// flood key that spent one token owes one hour.
		l := New(Config{Capacity: 100, RatePerSec: 1.0 / 3600, MaxBuckets: maxBuckets}, NewMemoryStore())
		now := t0
		for range 100 {
			if !l.Allow(victim, now).Allowed {
				t.Fatal("fresh bucket refused")
			}
		}
		refused := 0
		for key := 0; key < 10*maxBuckets; key++ {
			now += 1000 // a microsecond per request: nothing refills
			if d := l.Allow(fmt.Appendf(nil, "2001:db8::%x", key), now); d.TableFull {
				refused++
				l.Sweep(now)
			}
		}
		if l.Len() > maxBuckets || l.Debts() > maxBuckets {
			t.Fatalf("%d buckets and %d debts for a limit of %d", l.Len(), l.Debts(), maxBuckets)
		}
		if refused == 0 {
			t.Fatal("with every table full of debt, new clients must be refused, not reset")
		}
		if _, inMemory := l.Get(string(victim), now); inMemory {
			continue
		}
		// Two hours on, the flood keys have refilled and are evicted as
		// they are, so there is room; the victim has earned two tokens.
		now += 2*3600*sec + sec
		l.Sweep(now)
		for i, want := range []bool{true, true, false} {
			if d := l.Allow(victim, now); d.Allowed != want || d.TableFull {
				t.Fatalf("after %d evictions, request %d of the drained client: %+v", l.Evictions(), i, d)
			}
		}
		return
	}
	t.Fatal("the flood never evicted the drained bucket: the test proves nothing")
}

// TestTwoInstancesShareOneLimit runs two limiters on one store, as two
// proxies on one PostgreSQL: spending adds up, overshoot is paid back.
func TestTwoInstancesShareOneLimit(t *testing.T) {
	st := NewMemoryStore()
	const rate = 1e-6 // nothing refills within the test
	a := New(Config{Capacity: 10, RatePerSec: rate, Persist: true}, st)
	b := New(Config{Capacity: 10, RatePerSec: rate, Persist: true}, st)
	ctx := context.Background()
	key := []byte("k")
	admitted := 0
	for range 6 {
		if a.Allow(key, t0).Allowed {
			admitted++
		}
		if b.Allow(key, t0).Allowed {
			admitted++
		}
	}
	if admitted != 12 {
		t.Fatalf("before any sync each instance admits alone: %d", admitted)
	}
	for _, l := range []*Limiter{a, b, a} {
		if _, err := l.Flush(ctx, t0); err != nil {
			t.Fatal(err)
		}
	}
	if row, _ := st.Row("k"); row.WholeTokens() != -2 {
		t.Fatalf("row %+v, want 10-12 = -2 tokens (debt)", row)
	}
	for _, l := range []*Limiter{a, b} {
		if d := l.Allow(key, t0); d.Allowed {
			t.Fatalf("an instance admitted while the shared bucket is in debt: %+v", d)
		}
	}
}

// TestFarFromEmptyBucketsWait: a bucket spending little and more than half
// full waits up to DeferRounds flushes; one spending fast or past half goes
// at once; FlushAll sends everything; three instances spending in rounds
// still never admit past the shared capacity.
func TestFarFromEmptyBucketsWait(t *testing.T) {
	st := NewMemoryStore()
	ctx := context.Background()
	l := New(Config{Capacity: 100, RatePerSec: 1e-6, Persist: true, DeferRounds: 4}, st)
	l.Allow([]byte("slow"), t0)
	if n, _ := l.Flush(ctx, t0); n != 1 {
		t.Fatalf("a new bucket must sync at once: %d synced", n)
	}
	l.Allow([]byte("slow"), t0)
	for round := range 4 {
		if n, _ := l.Flush(ctx, t0); n != 0 {
			t.Fatalf("round %d: a bucket that spent 1 of 100 was synced", round)
		}
	}
	l.Allow([]byte("slow"), t0)
	if n, _ := l.Flush(ctx, t0); n != 1 {
		t.Fatalf("after 4 rounds the bucket must go: %d synced", n)
	}
	if row, _ := st.Row("slow"); row.WholeTokens() != 97 {
		t.Fatalf("slow row %+v, want 97", row)
	}
	l.Allow([]byte("fast"), t0)
	l.Flush(ctx, t0) //nolint:errcheck // the new bucket's first sync
	for range 13 {   // more than a sixteenth of the capacity
		l.Allow([]byte("fast"), t0)
	}
	if n, _ := l.Flush(ctx, t0); n != 1 {
		t.Fatalf("a bucket that spent 13 of 100 must sync at once: %d", n)
	}
	l.Allow([]byte("last"), t0)
	l.Flush(ctx, t0) //nolint:errcheck
	l.Allow([]byte("last"), t0)
	if n, _ := l.FlushAll(ctx, t0); n != 1 {
		t.Fatalf("FlushAll sent %d buckets, want 1", n)
	}
	if l.DirtyLen() != 0 {
		t.Fatalf("%d buckets dirty after FlushAll", l.DirtyLen())
	}

	// Three instances take turns: some requests, then a Flush. The shared
	// bucket of 40 admits a little over 40 (each instance learns the
	// others' last round only at its own next sync; the debt is paid
	// back), and deferral adds at most capacity/16 per other instance.
	shared := func(perRound, deferRounds int) int {
		st := NewMemoryStore()
		var insts []*Limiter
		for range 3 {
			insts = append(insts, New(Config{Capacity: 40, RatePerSec: 1e-6, Persist: true, DeferRounds: deferRounds}, st))
		}
		admitted := 0
		for range 30 {
			for _, in := range insts {
				for range perRound {
					if in.Allow([]byte("k"), t0).Allowed {
						admitted++
					}
				}
				if _, err := in.Flush(ctx, t0); err != nil {
					t.Fatal(err)
				}
			}
		}
		return admitted
	}
	for _, perRound := range []int{1, 2, 3, 4, 8} {
		with, without := shared(perRound, 4), shared(perRound, 0)
		t.Logf("%d requests per round: %d admitted with deferral, %d without", perRound, with, without)
		if with > without+2*40/16 {
			t.Fatalf("deferral let %d more through, the bound is (instances-1) x capacity/16 = 5", with-without)
		}
	}
}

func TestMostLimited(t *testing.T) {
	l := New(Config{Capacity: 2, RatePerSec: 1}, NewMemoryStore())
	for i, spend := range []int{1, 2, 4, 3} { // c1 keeps a token; c2 is empty; c3, c4 were refused too
		for range spend {
			l.Allow([]byte(fmt.Sprintf("c%d", i+1)), t0)
		}
	}
	got := l.MostLimited(2, t0)
	if len(got) != 2 || got[0].ClientID == "c1" || got[1].ClientID == "c1" {
		t.Fatalf("%+v", got)
	}
	// Refused requests leave the state as it was: c2, c3, c4 all wait 1 s.
	for _, g := range got {
		if g.Wait != time.Second || g.WholeTokens() != 0 {
			t.Fatalf("%+v", g)
		}
	}
	if all := l.MostLimited(10, t0); len(all) != 3 {
		t.Fatalf("%d limited, want 3 (c1 still has a token)", len(all))
	}
}

func TestSetDefaultsMovesAutomaticBucketsOnly(t *testing.T) {
	l := New(Config{Capacity: 10, RatePerSec: 1e-6}, NewMemoryStore())
	ctx := context.Background()
	for range 4 {
		l.Allow([]byte("auto"), t0)
	}
	if err := l.Create(ctx, Bucket{ClientID: "admin", Capacity: 20, Tokens: 20, RatePerSec: 1, LastRefill: time.Unix(0, t0), Managed: true}); err != nil {
		t.Fatal(err)
	}
	if err := l.SetDefaults(ctx, 5, 2, t0); err != nil {
		t.Fatal(err)
	}
	if b, _ := l.Get("auto", t0); b.Capacity != 5 || b.WholeTokens() != 5 || b.RatePerSec != 2 {
		t.Fatalf("automatic bucket after the change: %+v (6 tokens cut to the new capacity 5)", b)
	}
	if b, _ := l.Get("admin", t0); b.Capacity != 20 {
		t.Fatalf("admin bucket changed: %+v", b)
	}
	if d := l.Allow([]byte("newcomer"), t0); d.Limit != 5 {
		t.Fatalf("a new client got capacity %d", d.Limit)
	}
}

// TestAllowWithinQueuesBehindTheBurst: capacity 2 at 10/s (a token every
// 100 ms) with a delay of 250 ms: 2 at once, the next 2 wait 100 and 200
// ms (each behind the one before), the fifth would wait 300 ms: refused.
func TestAllowWithinQueuesBehindTheBurst(t *testing.T) {
	l, _ := newTest(2, 10)
	wait := int64(250 * time.Millisecond)
	var got []time.Duration
	for range 5 {
		d := l.AllowWithin([]byte("k"), t0, wait)
		if !d.Allowed {
			got = append(got, -1)
			continue
		}
		got = append(got, d.Retry)
	}
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, -1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
}
