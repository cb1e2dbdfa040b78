package pool

import (
	"hash/fnv"
	"math"
)

// Hash sends each client key to the same backend: weighted rendezvous
// hashing (highest random weight). Every backend scores the key, the best
// score wins; when a backend leaves, only its own keys move (1/N of them),
// spread over the others, and when it comes back they return. Scoring every
// healthy backend costs a hash and a logarithm each, nothing else.
type Hash struct{}

func (Hash) keyed() {}

// Prepare implements Strategy.
func (Hash) Prepare([]*Backend) any { return nil }

// Pick implements Strategy.
func (Hash) Pick(healthy []*Backend, _ any, k uint64) *Backend {
	best, bestScore := healthy[0], math.Inf(-1)
	for _, b := range healthy {
		// A uniform number in (0, 1) from the key and the backend; the
		// weighted score -w/ln(u) makes a backend of weight 2 win twice
		// as many keys as one of weight 1.
		u := (float64(mix(k^b.seed)>>11) + 0.5) / (1 << 53)
		if score := -float64(b.Weight()) / math.Log(u); score > bestScore {
			best, bestScore = b, score
		}
	}
	return best
}

// KeyHash is the number Next takes for a client key: FNV-1a.
func KeyHash(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finalizer: neighbouring inputs give unrelated outputs.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// seedOf is a backend's identity for hashing: its URL, so every instance
// of the proxy maps keys the same way.
func seedOf(url string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(url)) //nolint:errcheck
	return mix(h.Sum64())
}
