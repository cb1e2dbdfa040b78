package pool

import "sync/atomic"

// LeastConn picks the backend with the fewest requests in flight for its
// weight (in flight / weight, like nginx's least_conn), so a backend that
// slows down holds its requests longer and gets fewer new ones. Ties go
// round robin: the scan starts one further each time.
type LeastConn struct {
	start atomic.Uint64
}

// Prepare implements Strategy.
func (*LeastConn) Prepare([]*Backend) any { return nil }

// Pick implements Strategy.
func (l *LeastConn) Pick(healthy []*Backend, _ any, _ uint64) *Backend {
	n := uint64(len(healthy))
	first := l.start.Add(1) % n
	best := healthy[first]
	bestLoad := best.InFlight() + 1
	for i := uint64(1); i < n; i++ {
		b := healthy[(first+i)%n]
		// load/weight < bestLoad/bestWeight, in integers.
		if load := b.InFlight() + 1; load*int64(best.Weight()) < bestLoad*int64(b.Weight()) {
			best, bestLoad = b, load
		}
	}
	return best
}
