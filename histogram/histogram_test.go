package histogram

import (
	"math"
	"testing"
	"time"
)

func TestObserveAndQuantile(t *testing.T) {
	var h Histogram
	for i := range 100 {
		h.Observe(time.Duration(i+1) * 100 * time.Microsecond) // 0.1 ms .. 10 ms
	}
	h.Observe(2 * time.Minute) // past the last bound
	s := h.Snapshot()
	if s.Count() != 101 {
		t.Fatalf("count %d", s.Count())
	}
	if s.Counts[len(Bounds)] != 1 {
		t.Fatalf("+Inf bucket %d, want 1", s.Counts[len(Bounds)])
	}
	// Exact: 0.1+0.2+...+10 ms = 505 ms, plus 120 s.
	if want := 505*time.Millisecond + 2*time.Minute; s.Sum != want {
		t.Fatalf("sum %v, want %v", s.Sum, want)
	}
	// The median observation is 5.1 ms; interpolation inside the
	// 5..10 ms bucket puts it near there.
	if q := s.Quantile(0.5); math.Abs(q-0.005) > 0.001 {
		t.Fatalf("p50 %v s", q)
	}
	if q := s.Quantile(1); q != Bounds[len(Bounds)-1] {
		t.Fatalf("p100 %v, want the last bound", q)
	}
	empty := h.Snapshot().Sub(h.Snapshot())
	if empty.Count() != 0 || empty.Quantile(0.99) != 0 {
		t.Fatalf("a window with nothing in it: %+v", empty)
	}
}
