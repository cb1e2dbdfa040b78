package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/rs/zerolog"

	"gopher-equalizer/limits"
	"gopher-equalizer/metrics"
	"gopher-equalizer/pool"
	"gopher-equalizer/route"
)

// poolSet holds the named pools of the configuration file besides the
// pool "default" (the top-level settings, managed as before), each with
// its own backends, strategy, passive health and health checker. A reload
// keeps a pool that stays (its connections and health state), builds new
// ones, and drains removed ones after the new route table is in place.
type poolSet struct {
	def        *pool.Pool
	newBackend func(string) (*pool.Backend, error)
	log        zerolog.Logger
	ctx        context.Context // ends the health checkers
	wg         *sync.WaitGroup

	mu    sync.Mutex
	named map[string]*namedPool
}

type namedPool struct {
	spec    poolSpec
	pool    *pool.Pool
	checker *pool.Checker
	stop    context.CancelFunc
}

func healthConfig(c Config) pool.HealthConfig {
	status, _ := pool.ParseStatusSet(c.HealthStatus) // checked by LoadConfig
	return pool.HealthConfig{Interval: c.HealthInterval, Timeout: c.HealthTimeout, Path: c.HealthPath, Status: status,
		Fall: c.HealthFall, Rise: c.HealthRise}
}

// newPool builds the pool of c's backends, strategy and passive health:
// the pool default from the top-level settings, or a named one.
func newPool(c Config, newBackend func(string) (*pool.Backend, error)) (*pool.Pool, error) {
	backends := make([]*pool.Backend, 0, len(c.Backends))
	for _, raw := range c.Backends {
		b, err := newBackend(raw)
		if err != nil {
			return nil, err
		}
		backends = append(backends, b)
	}
	strategy, _ := pool.NewStrategy(c.Strategy) // checked by LoadConfig
	p := pool.New(backends, strategy)
	p.PassiveFails = int32(c.PassiveFails)
	return p, nil
}

// start builds and starts a pool.
func (s *poolSet) start(spec poolSpec) (*namedPool, error) {
	p, err := newPool(spec.cfg, s.newBackend)
	if err != nil {
		return nil, fmt.Errorf("pools.%s.backends: %w", spec.name, err)
	}
	np := &namedPool{spec: spec, pool: p, checker: pool.NewChecker(p, healthConfig(spec.cfg), s.log.With().Str("pool", spec.name).Logger())}
	ctx, cancel := context.WithCancel(s.ctx)
	np.stop = cancel
	s.wg.Go(func() { np.checker.Run(ctx) })
	return np, nil
}

// apply makes the set match specs; it returns the pools no longer listed,
// to be drained once no route sends requests to them.
func (s *poolSet) apply(specs []poolSpec) (removed []*namedPool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[string]*namedPool{}
	for _, spec := range specs {
		np, ok := s.named[spec.name]
		if !ok {
			if np, err = s.start(spec); err != nil {
				return nil, err
			}
			s.log.Info().Str("pool", spec.name).Strs("backends", spec.cfg.Backends).Msg("pool added")
			next[spec.name] = np
			continue
		}
		reconcileBackends(np.pool, spec.cfg.Backends, s.newBackend, s.log.With().Str("pool", spec.name).Logger())
		if np.spec.cfg.Strategy != spec.cfg.Strategy {
			strategy, _ := pool.NewStrategy(spec.cfg.Strategy)
			np.pool.SetStrategy(strategy)
		}
		np.pool.PassiveFails = int32(spec.cfg.PassiveFails)
		np.checker.SetConfig(healthConfig(spec.cfg))
		np.spec = spec
		next[spec.name] = np
	}
	for name, np := range s.named {
		if _, ok := next[name]; !ok {
			removed = append(removed, np)
		}
	}
	s.named = next
	return removed, nil
}

// drain takes a removed pool's backends out (requests in flight finish)
// and stops its health checks.
func (s *poolSet) drain(np *namedPool) {
	backends := np.pool.Backends()
	var left sync.WaitGroup
	for _, b := range backends {
		left.Add(1)
		np.pool.Drain(b, true, left.Done)
	}
	go func() {
		left.Wait()
		np.stop()
		s.log.Info().Str("pool", np.spec.name).Msg("pool drained and removed")
	}()
}

// byName maps every pool's name to it, "default" included.
func (s *poolSet) byName() map[string]*pool.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]*pool.Pool{route.DefaultPool: s.def}
	for name, np := range s.named {
		m[name] = np.pool
	}
	return m
}

// list is every pool, "default" first, for /metrics.
func (s *poolSet) list() []metrics.NamedPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []metrics.NamedPool{{Name: route.DefaultPool, Pool: s.def}}
	for _, spec := range slices.Sorted(maps.Keys(s.named)) {
		out = append(out, metrics.NamedPool{Name: spec, Pool: s.named[spec].pool})
	}
	return out
}

// routeTable compiles the routes over the pools and limits (one catch-all
// route without a routes: section), and logs the routes that can never
// match.
func routeTable(sec sections, pools map[string]*pool.Pool, lims map[string]*limits.Limit, log zerolog.Logger) (*route.Table, error) {
	if !sec.routed {
		return route.CatchAll(pools[route.DefaultPool], lims["default"]), nil
	}
	t, warnings, err := route.Compile(sec.routes, pools, lims)
	for _, w := range warnings {
		log.Warn().Msg(w)
	}
	return t, err
}

// checkSections validates the routing sections without building pools:
// what start-up and a reload refuse before changing anything.
func checkSections(sec sections) error {
	pools := map[string]*pool.Pool{route.DefaultPool: nil}
	for _, p := range sec.pools {
		pools[p.name] = nil
	}
	lims := map[string]*limits.Limit{"default": nil}
	for _, l := range sec.limits {
		lims[l.name] = nil
	}
	_, err := routeTable(sec, pools, lims, zerolog.Nop())
	return err
}
