package pool

import "sync/atomic"

// RoundRobin hands out the healthy backends in turn with one atomic counter.
// Over k healthy backends, N sequential picks give each N/k ± 1.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick implements Strategy.
func (r *RoundRobin) Pick(healthy []*Backend) *Backend {
	n := r.next.Add(1) - 1
	return healthy[n%uint64(len(healthy))]
}
