// Package pool holds the backends, publishes the healthy ones as an
// immutable slice behind an atomic pointer, picks one per request with a
// Strategy, and runs the active health checker that rebuilds the slice.
//
// The hot path (Next) is one atomic load plus the strategy's own atomic
// step: no lock, no allocation.
package pool

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrNoHealthyBackend is returned by Next when every backend is down.
var ErrNoHealthyBackend = errors.New("no healthy backend")

// Pool is safe for concurrent use.
type Pool struct {
	all      []*Backend
	healthy  atomic.Pointer[view]
	strategy Strategy

	// PassiveFails is how many connection failures in a row take a backend
	// out of rotation until the health checker sees it answer again, like
	// nginx's max_fails. 0 turns passive health off.
	PassiveFails int32

	// mu serialises publishing: the health checker and passive marks from
	// the request path may both change the healthy set.
	mu sync.Mutex
}

// New builds a pool over backends, all initially healthy.
func New(backends []*Backend, strategy Strategy) *Pool {
	p := &Pool{all: backends, strategy: strategy}
	p.publish()
	return p
}

// ConnectFailed records that a connection to b could not be opened. It
// reports whether this took b out of rotation.
func (p *Pool) ConnectFailed(b *Backend) bool {
	n := b.connectFails.Add(1)
	return p.PassiveFails > 0 && n >= p.PassiveFails && p.SetHealthy(b, false)
}

// Connected records a successful round trip to b. The common case is one
// atomic load.
func (p *Pool) Connected(b *Backend) {
	if b.connectFails.Load() != 0 {
		b.connectFails.Store(0)
	}
}

// Backends returns every configured backend, healthy or not.
func (p *Pool) Backends() []*Backend { return p.all }

// view is one published healthy set with what the strategy prepared for
// it; it never changes once stored.
type view struct {
	backends []*Backend
	state    any // the strategy's Prepare result
}

// Healthy returns the current healthy slice. The caller must not modify it.
func (p *Pool) Healthy() []*Backend { return p.healthy.Load().backends }

// NeedsKey reports whether the strategy picks by client key (hash), so the
// proxy must derive the key even with limiting off.
func (p *Pool) NeedsKey() bool {
	_, ok := p.strategy.(KeyedStrategy)
	return ok
}

// Next picks a healthy backend for a client key's KeyHash (used by hash,
// ignored by the others), or returns nil when there is none.
func (p *Pool) Next(key uint64) *Backend {
	v := p.healthy.Load()
	if len(v.backends) == 0 {
		return nil
	}
	return p.strategy.Pick(v.backends, v.state, key)
}

// NextExcept picks a healthy backend other than b for a retry, or nil when
// there is none.
func (p *Pool) NextExcept(b *Backend, key uint64) *Backend {
	v := p.healthy.Load()
	healthy := v.backends
	switch {
	case len(healthy) == 0:
		return nil
	case len(healthy) == 1 && healthy[0] == b:
		return nil
	}
	next := p.strategy.Pick(healthy, v.state, key)
	if next != b {
		return next
	}
	for i, h := range healthy {
		if h == b {
			return healthy[(i+1)%len(healthy)]
		}
	}
	return next
}

// SetHealthy records a probe result and republishes the healthy slice when
// the state changed. It reports whether it changed.
func (p *Pool) SetHealthy(b *Backend, healthy bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.healthy.Swap(healthy) == healthy {
		return false
	}
	if healthy {
		b.connectFails.Store(0)
	}
	p.publish()
	return true
}

// publish rebuilds the healthy slice in configuration order. Callers hold
// mu (or are New), so a slice never overwrites a newer one.
func (p *Pool) publish() {
	healthy := make([]*Backend, 0, len(p.all))
	for _, b := range p.all {
		if b.healthy.Load() {
			healthy = append(healthy, b)
		}
	}
	var state any
	if len(healthy) > 0 {
		state = p.strategy.Prepare(healthy)
	}
	p.healthy.Store(&view{backends: healthy, state: state})
}

// Strategy picks one backend from a non-empty healthy slice. Prepare runs
// when the healthy set changes and may precompute anything (a schedule, a
// table); Pick runs on every request with that result: it must be
// lock-free and allocation-free. key is the client key's KeyHash (a
// number, so that the key's bytes do not escape through the interface
// call); only a KeyedStrategy looks at it.
type Strategy interface {
	Prepare(healthy []*Backend) any
	Pick(healthy []*Backend, state any, key uint64) *Backend
}

// KeyedStrategy marks a strategy that picks by client key.
type KeyedStrategy interface {
	Strategy
	keyed()
}

// strategies maps EQUALIZER_STRATEGY names to constructors. Adding a strategy
// is one file with its type and one entry here.
var strategies = map[string]func() Strategy{
	"round_robin": func() Strategy { return &RoundRobin{} },
	"random":      func() Strategy { return Random{} },
	"least_conn":  func() Strategy { return &LeastConn{} },
	"p2c":         func() Strategy { return P2C{} },
	"hash":        func() Strategy { return Hash{} },
}

// NewStrategy returns the strategy registered under name.
func NewStrategy(name string) (Strategy, error) {
	newStrategy, ok := strategies[name]
	if !ok {
		return nil, fmt.Errorf("unknown strategy %q (want one of %s)", name, strings.Join(StrategyNames(), ", "))
	}
	return newStrategy(), nil
}

// StrategyNames lists the registered strategies, sorted.
func StrategyNames() []string {
	names := make([]string, 0, len(strategies))
	for name := range strategies {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
