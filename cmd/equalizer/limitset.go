package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"gopher-equalizer/limiter"
	"gopher-equalizer/limits"
	"gopher-equalizer/pgstore"
)

// limitSet holds the named limits of the configuration file besides the
// limit "default" (the top-level bucket_* and client_key settings). Each
// keeps its buckets in memory on this instance, with eviction at
// EQUALIZER_MAX_BUCKETS like the default limit's. A reload keeps a limit
// whose key stays (its buckets move to a changed capacity or rate, as the
// default limit's do), makes a new one for a new key, and drops removed
// ones.
type limitSet struct {
	def        *limits.Limit // nil with limiting off
	maxBuckets int
	log        zerolog.Logger
	ctx        context.Context // ends the sweepers
	wg         *sync.WaitGroup
	// With a database, a token limit's buckets are rows of its own
	// (pgstore.ForLimit), loaded at start and synced by a persister that
	// runs until persistCtx ends, then flushes one last time.
	pg          *pgstore.Store
	persistCtx  context.Context
	syncEvery   time.Duration
	deferRounds int
	finalFlush  time.Duration
	report      func(error)

	mu    sync.Mutex
	named map[string]*namedLimit
}

type namedLimit struct {
	limit *limits.Limit
	stop  context.CancelFunc
}

func (s *limitSet) build(spec limitSpec) (*namedLimit, error) {
	key, _ := limits.ParseKey(spec.key) // checked when parsed
	if spec.concurrency > 0 {
		f := limits.NewInFlight()
		ctx, cancel := context.WithCancel(s.ctx)
		s.wg.Go(func() { f.RunSweeper(ctx, 10*time.Second) })
		return &namedLimit{stop: cancel, limit: &limits.Limit{Name: spec.name, Key: key, KeyText: spec.key, Mode: spec.mode,
			Concurrency: spec.concurrency, InFlight: f}}, nil
	}
	rate, _ := limits.ParseRate(spec.rate) // checked when parsed
	l := &limits.Limit{Name: spec.name, Key: key, KeyText: spec.key,
		Mode: spec.mode, Capacity: spec.capacity, Rate: rate, RateText: spec.rate, Delay: spec.delay}
	if s.pg == nil {
		l.Lim = limiter.New(limiter.Config{Capacity: spec.capacity, RatePerSec: rate, MaxBuckets: s.maxBuckets}, limiter.NewMemoryStore())
		ctx, cancel := context.WithCancel(s.ctx)
		s.wg.Go(func() { l.Lim.RunSweeper(ctx) })
		return &namedLimit{stop: cancel, limit: l}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := s.pg.ForLimit(ctx, spec.name)
	if err != nil {
		return nil, fmt.Errorf("limit %s: %w", spec.name, err)
	}
	l.Lim = limiter.New(limiter.Config{Capacity: spec.capacity, RatePerSec: rate, MaxBuckets: s.maxBuckets,
		Persist: true, DeferRounds: s.deferRounds}, store)
	n, err := store.LoadInto(ctx, l.Lim, s.maxBuckets*9/10)
	if err != nil {
		return nil, fmt.Errorf("limit %s: load buckets: %w", spec.name, err)
	}
	s.log.Info().Str("limit", spec.name).Int("buckets", n).Msg("buckets loaded from PostgreSQL")
	pctx, stop := context.WithCancel(s.persistCtx)
	s.wg.Go(func() {
		if err := l.Lim.RunPersister(pctx, s.syncEvery, s.finalFlush, s.report); err != nil {
			s.log.Error().Err(err).Str("limit", spec.name).Msg("final flush failed: spending since the last flush is lost")
		}
	})
	return &namedLimit{stop: stop, limit: l}, nil
}

// apply makes the set match specs.
func (s *limitSet) apply(specs []limitSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[string]*namedLimit{}
	for _, spec := range specs {
		old, ok := s.named[spec.name]
		if !ok || old.limit.KeyText != spec.key || (old.limit.Concurrency > 0) != (spec.concurrency > 0) {
			if ok {
				old.stop()
				delete(s.named, spec.name)
			}
			nl, err := s.build(spec)
			if err != nil {
				for _, built := range next {
					if s.named[built.limit.Name] != built {
						built.stop()
					}
				}
				return err
			}
			next[spec.name] = nl
			continue
		}
		l := old.limit
		if spec.concurrency > 0 { // the counters carry over
			nl := &limits.Limit{Name: spec.name, Key: l.Key, KeyText: spec.key, Mode: spec.mode, Concurrency: spec.concurrency, InFlight: l.InFlight}
			next[spec.name] = &namedLimit{limit: carryDecisions(nl, l), stop: old.stop}
			continue
		}
		rate, _ := limits.ParseRate(spec.rate)
		if l.Capacity != spec.capacity || l.Rate != rate {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := l.Lim.SetDefaults(ctx, spec.capacity, rate, time.Now().UnixNano()); err != nil {
				s.log.Error().Err(err).Str("limit", spec.name).Msg("configuration reload: the limit's buckets keep their old size")
			}
			cancel()
		}
		// A new Limit (the old one is immutable and may be in use); the
		// buckets and counters carry over.
		nl := &limits.Limit{Name: spec.name, Lim: l.Lim, Key: l.Key, KeyText: spec.key, Mode: spec.mode,
			Capacity: spec.capacity, Rate: rate, RateText: spec.rate, Delay: spec.delay}
		next[spec.name] = &namedLimit{limit: carryDecisions(nl, l), stop: old.stop}
	}
	for name, old := range s.named {
		if _, ok := next[name]; !ok {
			old.stop()
		}
	}
	s.named = next
	return nil
}

// limiter finds the limiter of a limit by name, for the LISTEN loop: nil
// for a limit this configuration does not have or that keeps no buckets.
func (s *limitSet) limiter(name string) *limiter.Limiter {
	if name == "default" {
		if s.def == nil {
			return nil
		}
		return s.def.Lim
	}
	if l := s.byName()[name]; l != nil {
		return l.Lim
	}
	return nil
}

// carryDecisions gives a reloaded limit the counters of the one it
// replaces (the old one is immutable and may still be in use).
func carryDecisions(next, old *limits.Limit) *limits.Limit {
	for i := range next.Decisions {
		next.Decisions[i].Store(old.Decisions[i].Load())
	}
	return next
}

// byName maps every limit's name to it, "default" included.
func (s *limitSet) byName() map[string]*limits.Limit {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]*limits.Limit{"default": s.def}
	for name, nl := range s.named {
		m[name] = nl.limit
	}
	return m
}

// list is every limit, "default" first, for /limits and /metrics.
func (s *limitSet) list() []*limits.Limit {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*limits.Limit
	if s.def != nil {
		out = append(out, s.def)
	}
	for _, name := range slices.Sorted(maps.Keys(s.named)) {
		out = append(out, s.named[name].limit)
	}
	return out
}
