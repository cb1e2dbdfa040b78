package pool

import (
	"fmt"
	"gopher-equalizer/upstream"
	"math"
	"testing"
	"time"
)

func weighted(t testing.TB, weights ...int) []*Backend {
	t.Helper()
	var bs []*Backend
	for i, w := range weights {
		b, err := NewBackend(fmt.Sprintf("http://10.0.0.%d:8080 weight=%d", i+1, w), upstream.Options{})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	return bs
}

func TestWeightSyntax(t *testing.T) {
	b, err := NewBackend("http://10.0.0.1:8080   weight=7", upstream.Options{})
	if err != nil || b.Weight() != 7 || b.URL != "http://10.0.0.1:8080" {
		t.Fatalf("%+v %v", b, err)
	}
	if b, _ := NewBackend("http://10.0.0.1:8080", upstream.Options{}); b.Weight() != 1 {
		t.Fatalf("default weight %d", b.Weight())
	}
	for _, bad := range []string{"http://a:1 weight=0", "http://a:1 weight=1001", "http://a:1 weight=x", "http://a:1 max_fails=3"} {
		if _, err := NewBackend(bad, upstream.Options{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestSmoothWeightedRoundRobin: nginx's sequence for weights 5, 1, 1.
func TestSmoothWeightedRoundRobin(t *testing.T) {
	bs := weighted(t, 5, 1, 1)
	p := New(bs, &RoundRobin{})
	want := []int{0, 0, 1, 0, 2, 0, 0}
	for cycle := range 3 {
		for i, w := range want {
			if got := p.Next(0); got != bs[w] {
				t.Fatalf("cycle %d pick %d: %s, want %s", cycle, i, got.URL, bs[w].URL)
			}
		}
	}
}

func share(t *testing.T, p *Pool, bs []*Backend, n int, key func(i int) uint64) []float64 {
	t.Helper()
	counts := make([]float64, len(bs))
	for i := range n {
		got := p.Next(key(i))
		for j, b := range bs {
			if got == b {
				counts[j]++
			}
		}
	}
	for j := range counts {
		counts[j] /= float64(n)
	}
	return counts
}

func TestWeightedRandom(t *testing.T) {
	bs := weighted(t, 3, 1)
	got := share(t, New(bs, Random{}), bs, 40000, func(int) uint64 { return 0 })
	if math.Abs(got[0]-0.75) > 0.02 {
		t.Fatalf("weight 3 of 4 got %.3f of the picks", got[0])
	}
}

func TestLeastConnFollowsInFlightPerWeight(t *testing.T) {
	bs := weighted(t, 1, 2, 1)
	p := New(bs, &LeastConn{})
	bs[0].Begin()
	bs[0].Begin()
	bs[2].Begin()
	// In flight per weight: 2/1, 0/2, 1/1: the second is least loaded.
	for range 10 {
		if got := p.Next(0); got != bs[1] {
			t.Fatalf("picked %s", got.URL)
		}
	}
	for range 3 {
		bs[1].Begin()
	}
	// Now 2/1, 3/2, 1/1: the third.
	if got := p.Next(0); got != bs[2] {
		t.Fatalf("picked %s", got.URL)
	}
}

func TestP2CAvoidsTheSlowBackend(t *testing.T) {
	bs := weighted(t, 1, 1)
	p := New(bs, P2C{})
	bs[0].Begin()
	bs[0].Done(time.Millisecond)
	bs[1].Begin()
	bs[1].Done(10 * time.Millisecond)
	got := share(t, p, bs, 1000, func(int) uint64 { return 0 })
	if got[1] != 0 {
		t.Fatalf("with two backends and no load the slow one should never win: %.3f", got[1])
	}
	// Load on the fast one: 20 in flight x 1 ms is more than 1 x 10 ms.
	for range 20 {
		bs[0].Begin()
	}
	if p.Next(0) != bs[1] {
		t.Fatal("a loaded fast backend should lose to an idle slow one")
	}
}

func TestHashIsStickyAndMovesOnlyTheLeaversKeys(t *testing.T) {
	bs := weighted(t, 1, 1, 1, 1)
	p := New(bs, Hash{})
	const keys = 20000
	before := make([]*Backend, keys)
	for i := range keys {
		k := KeyHash(fmt.Appendf(nil, "client-%d", i))
		before[i] = p.Next(k)
		if p.Next(k) != before[i] {
			t.Fatal("the same key went to two backends")
		}
	}
	p.SetHealthy(bs[1], false)
	moved := 0
	for i := range keys {
		now := p.Next(KeyHash(fmt.Appendf(nil, "client-%d", i)))
		if now != before[i] {
			moved++
			if before[i] != bs[1] {
				t.Fatalf("key %d moved from a backend that stayed", i)
			}
		}
	}
	if f := float64(moved) / keys; math.Abs(f-0.25) > 0.02 {
		t.Fatalf("%.3f of the keys moved when 1 of 4 backends left, want about 0.25", f)
	}
	p.SetHealthy(bs[1], true)
	for i := range keys {
		if p.Next(KeyHash(fmt.Appendf(nil, "client-%d", i))) != before[i] {
			t.Fatal("keys did not come back to the returning backend")
		}
	}
	// Weights: 2 against 1, 1, 1.
	ws := weighted(t, 2, 1, 1, 1)
	got := share(t, New(ws, Hash{}), ws, keys, func(i int) uint64 { return KeyHash(fmt.Appendf(nil, "k%d", i)) })
	if math.Abs(got[0]-0.4) > 0.02 {
		t.Fatalf("weight 2 of 5 got %.3f of the keys", got[0])
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	for _, name := range StrategyNames() {
		s, _ := NewStrategy(name)
		p := New(weighted(t, 3, 1, 2), s)
		if n := testing.AllocsPerRun(1000, func() { p.Next(12345) }); n != 0 {
			t.Errorf("%s: %v allocations per pick", name, n)
		}
	}
}

// BenchmarkPick measures each strategy's Pick over 3 weighted backends,
// from all cores at once (the table in bench/RESULTS.md). The in-flight
// counts and latencies it reads are set once: Begin and Done, which every
// forwarded request pays whatever the strategy, are not in the figure.
func BenchmarkPick(b *testing.B) {
	for _, name := range StrategyNames() {
		b.Run(name, func(b *testing.B) {
			s, _ := NewStrategy(name)
			bs := weighted(b, 3, 1, 2)
			p := New(bs, s)
			for i, be := range bs {
				for range i + 1 {
					be.Begin()
				}
				be.Done(time.Duration(i+1) * time.Millisecond)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				k := uint64(0)
				for pb.Next() {
					k++
					p.Next(k * 0x9e3779b97f4a7c15)
				}
			})
		})
	}
}
