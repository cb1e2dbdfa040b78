// Package histogram is a Prometheus-style duration histogram updated with
// atomics only, for the request path: VictoriaMetrics' PrometheusHistogram
// takes a mutex per update. /metrics exposes it through client_golang.
package histogram

import (
	"sync/atomic"
	"time"
)

// Bounds are the upper bounds in seconds, the Prometheus "le" labels: fine
// below 100 ms, where proxied requests live, and up to a minute, the
// default backend timeout.
var Bounds = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

var boundsNs = func() (ns [len(Bounds)]int64) {
	for i, s := range Bounds {
		ns[i] = int64(s * float64(time.Second))
	}
	return ns
}()

// Histogram counts durations in fixed buckets. The zero value is ready.
type Histogram struct {
	counts [len(Bounds) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumNs  atomic.Int64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	ns := int64(d)
	i := 0
	for i < len(boundsNs) && ns > boundsNs[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(ns)
}

// Snapshot is a histogram read at one moment.
type Snapshot struct {
	Counts [len(Bounds) + 1]uint64 // per bucket, not cumulative
	Sum    time.Duration
}

// Snapshot reads the histogram. Buckets are read one by one while requests
// go on, so the counts are each exact but not of one instant.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = time.Duration(h.sumNs.Load())
	return s
}

// Count is the number of observations.
func (s *Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Sub returns the observations made since old.
func (s Snapshot) Sub(old Snapshot) Snapshot {
	for i := range s.Counts {
		s.Counts[i] -= old.Counts[i]
	}
	s.Sum -= old.Sum
	return s
}

// Quantile estimates the q-quantile (0..1) in seconds by linear
// interpolation inside its bucket, as Prometheus' histogram_quantile does;
// 0 when empty. Past the last bound it answers the last bound.
func (s *Snapshot) Quantile(q float64) float64 {
	total := s.Count()
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	lower := 0.0
	for i, c := range s.Counts {
		if i == len(Bounds) {
			return Bounds[len(Bounds)-1]
		}
		upper := Bounds[i]
		if seen+float64(c) >= rank && c > 0 {
			return lower + (upper-lower)*(rank-seen)/float64(c)
		}
		seen += float64(c)
		lower = upper
	}
	return lower
}
