package route

import (
	"sync"
	"sync/atomic"
)

// Counts are one route's requests by outcome, indexed by the proxy's
// outcome numbers.
type Counts [32]atomic.Uint64

// Counters hands out one Counts per route name and keeps them, so a
// reload that keeps a route keeps its counters. Only the admin side (a
// table being built, a scrape) takes its lock.
type Counters struct {
	mu     sync.Mutex
	byName map[string]*Counts
}

// For returns name's counts, made on first use.
func (c *Counters) For(name string) *Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byName == nil {
		c.byName = map[string]*Counts{}
	}
	n, ok := c.byName[name]
	if !ok {
		n = &Counts{}
		c.byName[name] = n
	}
	return n
}

// Each calls f for every route name ever counted.
func (c *Counters) Each(f func(name string, n *Counts)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, n := range c.byName {
		f(name, n)
	}
}
