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
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoHealthyBackend is returned by Next when every backend is down.
var ErrNoHealthyBackend = errors.New("no healthy backend")

// Pool is safe for concurrent use.
type Pool struct {
	all      atomic.Pointer[[]*Backend] // every backend, in order; replaced, never changed
	healthy  atomic.Pointer[view]
	strategy Strategy

	// PassiveFails is how many connection failures in a row take a backend
	// out of rotation until the health checker sees it answer again, like
	// nginx's max_fails. 0 turns passive health off.
	PassiveFails int32

	// mu serialises changes and publishing: the health checker, passive
	// marks from the request path and the /backends API all change the
	// set. Requests never take it.
	mu sync.Mutex
}

// New builds a pool over backends, all initially healthy.
func New(backends []*Backend, strategy Strategy) *Pool {
	p := &Pool{strategy: strategy}
	all := slices.Clone(backends)
	p.all.Store(&all)
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

// Backends returns every backend, healthy or not, draining or not. The
// caller must not modify the slice.
func (p *Pool) Backends() []*Backend { return *p.all.Load() }

// Lookup finds a backend by its address (host:port) or URL.
func (p *Pool) Lookup(id string) *Backend {
	for _, b := range p.Backends() {
		if b.Addr == id || b.URL == id {
			return b
		}
	}
	return nil
}

// ErrExists is Add's answer for a backend already in the pool.
var ErrExists = errors.New("a backend with this address is already in the pool")

// Add puts b in rotation (healthy until a probe says otherwise).
func (p *Pool) Add(b *Backend) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.all.Load()
	for _, o := range old {
		if o.Addr == b.Addr || o.URL == b.URL {
			return ErrExists
		}
	}
	all := append(slices.Clone(old), b)
	p.all.Store(&all)
	p.publish()
	return nil
}

// Remove takes b out of the pool at once. Requests already sent to it
// finish: they hold the backend, not the pool.
func (p *Pool) Remove(b *Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := slices.DeleteFunc(slices.Clone(*p.all.Load()), func(o *Backend) bool { return o == b })
	p.all.Store(&all)
	p.publish()
}

// SetWeight changes b's weight; the strategy prepares for it at once.
func (p *Pool) SetWeight(b *Backend, w int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b.weight.Store(int32(w))
	p.publish()
}

// Activate puts a drained or draining backend back in rotation.
func (p *Pool) Activate(b *Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b.state.Store(int32(Active))
	p.publish()
}

// Drain stops sending new requests to b at once; when the requests it
// holds are done (their response heads arrived), it is removed from the
// pool (remove) or kept as Drained. done, if not nil, is called then.
// Streamed bodies and tunnels already under way go on over their own
// connections.
func (p *Pool) Drain(b *Backend, remove bool, done func()) {
	p.mu.Lock()
	b.state.Store(int32(Draining))
	p.publish()
	p.mu.Unlock()
	go func() {
		for b.InFlight() > 0 && b.State() == Draining {
			time.Sleep(20 * time.Millisecond)
		}
		p.mu.Lock()
		finished := b.state.CompareAndSwap(int32(Draining), int32(Drained))
		p.mu.Unlock()
		if finished && remove {
			p.Remove(b)
		}
		if done != nil {
			done()
		}
	}()
}

// view is one published healthy set with what the strategy prepared for
// it; it never changes once stored.
type view struct {
	backends []*Backend
	strategy Strategy
	state    any  // the strategy's Prepare result
	keyed    bool // strategy is a KeyedStrategy
}

// Healthy returns the current healthy slice. The caller must not modify it.
func (p *Pool) Healthy() []*Backend { return p.healthy.Load().backends }

// NeedsKey reports whether the strategy picks by client key (hash), so the
// proxy must derive the key even with limiting off.
func (p *Pool) NeedsKey() bool { return p.healthy.Load().keyed }

// SetStrategy switches the strategy; requests see the new one with the next
// healthy set, published at once.
func (p *Pool) SetStrategy(s Strategy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.strategy = s
	p.publish()
}

// Next picks a healthy backend for a client key's KeyHash (used by hash,
// ignored by the others), or returns nil when there is none.
func (p *Pool) Next(key uint64) *Backend {
	v := p.healthy.Load()
	if len(v.backends) == 0 {
		return nil
	}
	return v.strategy.Pick(v.backends, v.state, key)
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
	next := v.strategy.Pick(healthy, v.state, key)
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
	all := *p.all.Load()
	healthy := make([]*Backend, 0, len(all))
	for _, b := range all {
		if b.healthy.Load() && b.State() == Active {
			healthy = append(healthy, b)
		}
	}
	var state any
	if len(healthy) > 0 {
		state = p.strategy.Prepare(healthy)
	}
	_, keyed := p.strategy.(KeyedStrategy)
	p.healthy.Store(&view{backends: healthy, strategy: p.strategy, state: state, keyed: keyed})
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

// StrategyName is the name of the pool's strategy, for the admin API.
func (p *Pool) StrategyName() string {
	p.mu.Lock()
	current := reflect.TypeOf(p.strategy)
	p.mu.Unlock()
	for name, newStrategy := range strategies {
		if reflect.TypeOf(newStrategy()) == current {
			return name
		}
	}
	return ""
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
