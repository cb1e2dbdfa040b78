package pool

import "sync/atomic"

// LeastConn picks the backend with the fewest requests in flight for its
// weight (in flight / weight, like nginx's least_conn), so a backend that
// slows down holds its requests longer and gets fewer new ones. Ties go to
// a backend clearly faster (its average response time under half the
// other's), else round robin: the scan starts one further each time. At
// low load most picks are ties, and without the latency tie-break a slow
// backend would still get its full share of them.
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
		// load/weight against bestLoad/bestWeight, in integers.
		load := b.InFlight() + 1
		mine, theirs := load*int64(best.Weight()), bestLoad*int64(b.Weight())
		if mine < theirs || (mine == theirs && 2*b.latencyNs.Load() < best.latencyNs.Load()) {
			best, bestLoad = b, load
		}
	}
	return best
}
