package pool

import "math/rand/v2"

// Random picks a healthy backend uniformly at random. The top-level
// math/rand/v2 functions use a per-thread generator: no lock, no allocation.
type Random struct{}

// Pick implements Strategy.
func (Random) Pick(healthy []*Backend) *Backend {
	return healthy[rand.IntN(len(healthy))]
}
