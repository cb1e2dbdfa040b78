package pool

import "math/rand/v2"

// Random picks a healthy backend at random, in proportion to its weight.
// The top-level math/rand/v2 functions use a per-thread generator: no
// lock, no allocation.
type Random struct{}

// Prepare implements Strategy: the running sums of the weights.
func (Random) Prepare(healthy []*Backend) any {
	cum := make([]uint64, len(healthy))
	var total uint64
	for i, b := range healthy {
		total += uint64(b.Weight())
		cum[i] = total
	}
	return cum
}

// Pick implements Strategy.
func (Random) Pick(healthy []*Backend, state any, _ uint64) *Backend {
	cum := state.([]uint64)
	r := rand.Uint64N(cum[len(cum)-1])
	for i, c := range cum {
		if r < c {
			return healthy[i]
		}
	}
	return healthy[len(healthy)-1]
}
