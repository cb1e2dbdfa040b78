package pool

import "math/rand/v2"

// P2C is the power of two choices (Envoy's and Linkerd's default): two
// backends drawn at random, the one with the lower cost wins. The cost is
// (requests in flight + 1) times the decaying average of its response
// time, over its weight: a backend that slows down loses traffic before
// requests pile up on it, and no global scan or lock is needed.
type P2C struct{}

// Prepare implements Strategy.
func (P2C) Prepare([]*Backend) any { return nil }

// Pick implements Strategy.
func (P2C) Pick(healthy []*Backend, _ any, _ uint64) *Backend {
	n := len(healthy)
	if n == 1 {
		return healthy[0]
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := healthy[i], healthy[j]
	if b.cost() < a.cost() {
		return b
	}
	return a
}
