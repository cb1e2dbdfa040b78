package main

import (
	"context"
	"errors"
	"reflect"
	"time"

	"github.com/rs/zerolog"

	"gopher-equalizer/accesslog"
	"gopher-equalizer/limiter"
	"gopher-equalizer/pgstore"
	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
	"gopher-equalizer/route"
)

// reloader applies a new configuration on SIGHUP, as nginx and HAProxy do:
// the file (and the environment, which still wins) is read again and
// checked whole; an invalid one changes nothing. What can change live does,
// without dropping a connection or a request; what needs a restart (a
// listen address, the database) is logged and left as it is.
type reloader struct {
	cfg        Config
	environ    map[string]string // the process environment at start
	pool       *pool.Pool        // "default"
	checker    *pool.Checker
	pools      *poolSet  // the named ones
	limits     *limitSet // the named ones
	proxy      *proxy.Proxy
	lim        *limiter.Limiter
	pg         *pgstore.Store // nil without a database
	access     *accesslog.Log // nil when the access log is off
	certs      *certStore     // nil without TLS
	newBackend func(string) (*pool.Backend, error)
	// applyStored applies a backend change stored through the API; the
	// reload re-applies them over the file's list.
	applyStored func(pgstore.BackendRow)
	log         zerolog.Logger
}

// live are the settings a reload applies; every other one needs a restart.
var live = map[string]bool{
	"Backends": true, "Strategy": true,
	"HealthInterval": true, "HealthTimeout": true, "HealthPath": true, "HealthStatus": true,
	"HealthFall": true, "HealthRise": true,
	"BucketCapacity": true, "BucketRefillAmount": true, "BucketRefillInterval": true,
	"LogLevel": true, "AccessLog": true, "TLSCert": true, "TLSKey": true,
}

// reload reads and applies the configuration; it reports whether the new
// one was accepted.
func (r *reloader) reload() bool {
	merged, err := configEnviron(r.environ)
	var next Config
	if err == nil {
		next, err = LoadConfig(merged)
	}
	if err == nil && (r.access == nil) != (next.AccessLog == "off") {
		err = errors.New("turning the access log on or off (EQUALIZER_ACCESS_LOG) needs a restart")
	}
	if err == nil && (r.certs == nil) != (next.TLSCert == "") {
		err = errors.New("turning TLS on or off (EQUALIZER_TLS_CERT) needs a restart")
	}
	var sec sections
	if err == nil {
		sec, err = readSections(r.environ)
	}
	if err == nil {
		err = checkSections(sec)
	}
	if err != nil {
		r.log.Error().Err(err).Msg("configuration reload rejected; the running configuration stays")
		return false
	}
	var changed, ignored []string
	old := reflect.ValueOf(r.cfg)
	now := reflect.ValueOf(next)
	t := old.Type()
	for i := range t.NumField() {
		if reflect.DeepEqual(old.Field(i).Interface(), now.Field(i).Interface()) {
			continue
		}
		name := envName(t.Field(i).Name)
		if live[t.Field(i).Name] {
			changed = append(changed, name)
		} else {
			ignored = append(ignored, name)
		}
	}
	if len(ignored) > 0 {
		r.log.Warn().Strs("settings", ignored).Msg("configuration reload: these need a restart and were left as they are")
	}
	r.apply(next)
	r.applyRouting(sec)
	// The ignored settings keep their running values.
	applied := r.cfg
	for i := range t.NumField() {
		if live[t.Field(i).Name] {
			reflect.ValueOf(&applied).Elem().Field(i).Set(now.Field(i))
		}
	}
	r.cfg = applied
	r.log.Info().Strs("changed", changed).Msg("configuration reloaded")
	return true
}

// apply makes the running proxy match next's live settings.
func (r *reloader) apply(next Config) {
	cur := r.cfg
	if !reflect.DeepEqual(cur.Backends, next.Backends) {
		r.applyBackends(next.Backends)
		if r.pg != nil {
			// Changes made through the API stay on top of the file.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			rows, err := r.pg.Backends(ctx)
			cancel()
			if err != nil {
				r.log.Error().Err(err).Msg("configuration reload: stored backend changes not re-applied")
			}
			for _, row := range rows {
				r.applyStored(row)
			}
		}
	}
	if cur.Strategy != next.Strategy {
		s, _ := pool.NewStrategy(next.Strategy) // checked by LoadConfig
		r.pool.SetStrategy(s)
	}
	r.checker.SetConfig(healthConfig(next))
	if cur.BucketCapacity != next.BucketCapacity || cur.RatePerSec() != next.RatePerSec() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.lim.SetDefaults(ctx, next.BucketCapacity, next.RatePerSec(), time.Now().UnixNano()); err != nil {
			r.log.Error().Err(err).Msg("configuration reload: new default bucket not applied in memory")
		}
		if r.pg != nil {
			n, err := r.pg.SetDefaults(ctx, limiter.Defaults{Capacity: cur.BucketCapacity, RatePerSec: cur.RatePerSec()},
				limiter.Defaults{Capacity: next.BucketCapacity, RatePerSec: next.RatePerSec()})
			if err != nil {
				r.log.Error().Err(err).Msg("configuration reload: stored automatic buckets keep the old default until the next reload")
			} else {
				r.log.Info().Int64("rows", n).Msg("automatic buckets in PostgreSQL moved to the new default")
			}
		}
	}
	if level, err := zerolog.ParseLevel(next.LogLevel); err == nil {
		zerolog.SetGlobalLevel(level)
	}
	if r.access != nil && cur.AccessLog != next.AccessLog {
		r.access.Retarget(next.AccessLog)
	}
	if r.certs != nil {
		// Read again even if the names did not change: certbot renews in
		// place. LoadConfig just loaded the pair, so it is valid.
		if cert, err := loadCert(next.TLSCert, next.TLSKey); err == nil {
			r.certs.cert.Store(cert)
		}
	}
}

// applyRouting swaps in the new pools, routes and deny list: new pools
// first, then the table, and only then are removed pools drained, so no
// request is routed to a pool that is going away.
func (r *reloader) applyRouting(sec sections) {
	removed, err := r.pools.apply(sec.pools)
	if err != nil {
		r.log.Error().Err(err).Msg("configuration reload: pools not applied")
		return
	}
	if err := r.limits.apply(sec.limits); err != nil {
		r.log.Error().Err(err).Msg("configuration reload: limits not applied")
		return
	}
	table, err := routeTable(sec, r.pools.byName(), r.limits.byName(), r.log)
	if err != nil { // checked before; a pool that failed to build
		r.log.Error().Err(err).Msg("configuration reload: routes not applied")
		return
	}
	r.proxy.SetRoutes(table)
	r.proxy.SetDeny(sec.deny)
	r.proxy.SetExempt(sec.exempt)
	for _, np := range removed {
		r.pools.drain(np)
	}
	if r.pg != nil {
		// Changes made through the API stay on top of the file, in every
		// pool (the default pool's are re-applied with its backends).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rows, err := r.pg.Backends(ctx)
		cancel()
		if err != nil {
			r.log.Error().Err(err).Msg("configuration reload: stored backend changes of the pools not re-applied")
		}
		for _, row := range rows {
			if row.Pool != route.DefaultPool {
				r.applyStored(row)
			}
		}
	}
}

// applyBackends makes the pool "default" match the file's backends.
func (r *reloader) applyBackends(specs []string) {
	reconcileBackends(r.pool, specs, r.newBackend, r.log)
}

// reconcileBackends adds new backends to p, changes weights, brings back
// listed ones that were drained, and drains then removes the ones no
// longer listed.
func reconcileBackends(p *pool.Pool, specs []string, newBackend func(string) (*pool.Backend, error), log zerolog.Logger) {
	listed := map[*pool.Backend]bool{}
	for _, spec := range specs {
		nb, err := newBackend(spec)
		if err != nil {
			continue // checked by LoadConfig
		}
		if b := p.Lookup(nb.URL); b != nil {
			listed[b] = true
			if b.Weight() != nb.Weight() {
				p.SetWeight(b, nb.Weight())
			}
			if b.State() != pool.Active {
				p.Activate(b)
			}
			continue
		}
		if err := p.Add(nb); err != nil {
			log.Error().Err(err).Str("backend", nb.URL).Msg("configuration reload: backend not added")
			continue
		}
		listed[nb] = true
		log.Info().Str("backend", nb.URL).Int("weight", nb.Weight()).Msg("backend added by reload")
	}
	for _, b := range p.Backends() {
		if !listed[b] && b.State() == pool.Active {
			p.Drain(b, true, func() { log.Info().Str("backend", b.URL).Msg("backend drained and removed by reload") })
		}
	}
}
