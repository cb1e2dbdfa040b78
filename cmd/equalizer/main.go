// Command equalizer is the gopher-equalizer rate-limiting reverse proxy.
// It reads its configuration from EQUALIZER_* environment variables; run it
// with -h to list them.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"gopher-equalizer/accesslog"
	"gopher-equalizer/admin"
	"gopher-equalizer/deadline"
	"gopher-equalizer/limiter"
	"gopher-equalizer/logthrottle"
	"gopher-equalizer/metrics"
	"gopher-equalizer/pgstore"
	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
	"gopher-equalizer/upstream"
)

func main() {
	os.Exit(run(os.Args[1:], environ()))
}

func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func run(args []string, env map[string]string) int {
	flags := flag.NewFlagSet("equalizer", flag.ContinueOnError)
	demo := flags.Bool("demo", false, "also start three demo backends on 127.0.0.1:8081-8083")
	flags.SetOutput(io.Discard) // errors are printed below, help to stdout
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(os.Stdout)
			return 0
		}
		fmt.Fprintf(os.Stderr, "equalizer: %v (the only flags are -demo and -h)\n", err)
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "equalizer: unexpected argument %q (the only flags are -demo and -h; settings are environment variables)\n", flags.Arg(0))
		return 2
	}
	merged, err := configEnviron(env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "equalizer:", err)
		return 2
	}
	cfg, err := LoadConfig(merged)
	if err != nil {
		fmt.Fprintln(os.Stderr, "equalizer:", err)
		return 2
	}
	sec, err := readSections(env)
	if err == nil {
		err = checkSections(sec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "equalizer:", err)
		return 2
	}
	log := newLogger(cfg)
	if err := serve(cfg, sec, env, *demo, log); err != nil {
		log.Error().Err(err).Msg("equalizer stopped with an error")
		return 1
	}
	return 0
}

func newLogger(cfg Config) zerolog.Logger {
	level, _ := zerolog.ParseLevel(cfg.LogLevel)
	var log zerolog.Logger
	if cfg.LogFormat == "console" {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339})
	} else {
		log = zerolog.New(os.Stderr)
	}
	// The level is global so that a reload can change it.
	zerolog.SetGlobalLevel(level)
	return log.With().Timestamp().Logger()
}

// serve runs the proxy until SIGINT or SIGTERM, then stops in order: stop
// accepting and drain the proxy, stop health checks, flush buckets to the
// store, close the admin listener, close the store.
func serve(cfg Config, sec sections, env map[string]string, demo bool, log zerolog.Logger) error {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	if demo {
		stopDemo, err := startDemoBackends(cfg.DemoHost, log)
		if err != nil {
			return err
		}
		defer stopDemo()
	}

	backendLog := logthrottle.New(log, 10*time.Second)
	// Client and backend connections take coarse deadlines: timeouts fire
	// up to one tick late, and moving a deadline costs an atomic store
	// instead of a runtime timer update (bench/RESULTS.md).
	deadlines := deadline.New(deadlineTick)
	defer deadlines.Stop()
	backendCAs, err := loadCAs(cfg.BackendCA)
	if err != nil {
		return fmt.Errorf("EQUALIZER_BACKEND_CA: %w", err)
	}
	newBackend := func(spec string) (*pool.Backend, error) {
		return pool.NewBackend(strings.TrimSpace(spec), upstream.Options{
			DialTimeout:       cfg.DialTimeout,
			MaxConns:          cfg.MaxConnsPerBackend,
			MaxIdleConnTime:   cfg.BackendIdleTimeout,
			ReadBufferSize:    cfg.MaxHeaderSize,
			StreamIdleTimeout: cfg.StreamIdleTimeout,
			Log:               backendLog,
			RootCAs:           backendCAs,
			Deadlines:         deadlines,
		})
	}
	backendPool, err := newPool(cfg, newBackend)
	if err != nil {
		return err
	}

	// Health checkers (one per pool) run until the drain is over.
	healthCtx, stopHealth := context.WithCancel(context.Background())
	// Persisters run until the drain is over, then flush one last time.
	persistCtx, stopPersist := context.WithCancel(context.Background())
	defer stopPersist()
	defer stopHealth()
	var background sync.WaitGroup
	pools := &poolSet{def: backendPool, newBackend: newBackend, log: log, ctx: healthCtx, wg: &background}
	if _, err := pools.apply(sec.pools); err != nil {
		return err
	}

	store, closeStore, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer closeStore()
	lim := limiter.New(limiter.Config{
		Capacity:   cfg.BucketCapacity,
		RatePerSec: cfg.RatePerSec(),
		MaxBuckets: cfg.MaxBuckets,
		Persist:    cfg.DatabaseURL != "",
		// Buckets far from empty sync at EQUALIZER_PERSIST_INTERVAL, the
		// others at EQUALIZER_SYNC_INTERVAL.
		DeferRounds: max(int(cfg.PersistInterval/max(cfg.SyncInterval, 1))-1, 0),
	}, store)
	applyStored := func(r pgstore.BackendRow) {
		p := pools.byName()[r.Pool]
		if p == nil {
			log.Debug().Str("pool", r.Pool).Str("backend", r.URL).Msg("stored backend change of a pool this configuration does not have")
			return
		}
		if err := p.Apply(pool.Change{URL: r.URL, Weight: r.Weight, State: r.State}, newBackend); err != nil && !errors.Is(err, pool.ErrExists) {
			log.Error().Err(err).Str("pool", r.Pool).Str("backend", r.URL).Msg("stored backend change not applied")
		}
	}
	var saveBackend func(context.Context, string, pool.Change) error
	var listener *pgstore.Listener
	// The LISTEN loop hands each change to its limit's limiter; the named
	// limits are built below.
	var namedLims *limitSet
	limiterOf := func(name string) *limiter.Limiter {
		if name == "default" {
			return lim
		}
		if namedLims == nil {
			return nil
		}
		return namedLims.limiter(name)
	}
	if pg, ok := store.(*pgstore.Store); ok {
		// Listening starts before anything is loaded, so that every admin
		// change is either in what is loaded or notified after it; all of
		// it is in memory before the listeners open.
		listenCtx, cancel := context.WithTimeout(context.Background(), cfg.DatabaseConnectTimeout)
		listener, err = pg.Listen(listenCtx, limiterOf, applyStored)
		cancel()
		if err != nil {
			return fmt.Errorf("listen for admin changes: %w", err)
		}
		defer listener.Close()
		// Backend changes made through the API on any instance, on top of
		// the configuration.
		rows, err := pg.Backends(context.Background())
		if err != nil {
			return fmt.Errorf("load backend changes: %w", err)
		}
		for _, r := range rows {
			applyStored(r)
		}
		saveBackend = func(ctx context.Context, poolName string, c pool.Change) error {
			return pg.SaveBackend(ctx, pgstore.BackendRow{Pool: poolName, URL: c.URL, Weight: c.Weight, State: c.State})
		}
	}
	if pg, ok := store.(*pgstore.Store); ok {
		start := time.Now()
		n, err := pg.LoadInto(context.Background(), lim, cfg.MaxBuckets*9/10) // room for new clients
		if err != nil {
			return fmt.Errorf("load buckets: %w", err)
		}
		log.Info().Int("buckets", n).Dur("took", time.Since(start)).Msg("buckets loaded from PostgreSQL")
	}

	key, _ := proxy.ParseClientKey(cfg.ClientKey, cfg.TrustedProxies, cfg.IPv6Prefix)
	charged := lim
	if !cfg.RateLimit {
		charged = nil
		log.Warn().Msg("EQUALIZER_RATE_LIMIT=false: requests are forwarded without rate limiting")
	}
	access, err := openAccessLog(cfg, log)
	if err != nil {
		return err
	}
	var accessWriter io.Writer
	if access != nil {
		accessWriter = access
	}
	px := proxy.New(proxy.Config{
		BackendTimeout: cfg.BackendTimeout, StreamIdleTimeout: cfg.StreamIdleTimeout,
		TunnelIdleTimeout: cfg.TunnelIdleTimeout, MaxBodySize: cfg.MaxBodySize,
		RateLimitHeaders: cfg.RateLimitHeaders,
		RequestIDHeader:  cfg.RequestID,
		AccessLog:        accessWriter,
	}, backendPool, charged, key, log)
	pgStore, _ := store.(*pgstore.Store)
	lims := &limitSet{def: px.DefaultLimit(), maxBuckets: cfg.MaxBuckets, log: log, ctx: healthCtx, wg: &background,
		pg: pgStore, persistCtx: persistCtx, syncEvery: min(cfg.SyncInterval, cfg.PersistInterval),
		deferRounds: max(int(cfg.PersistInterval/max(cfg.SyncInterval, 1))-1, 0), finalFlush: cfg.ShutdownTimeout,
		report: throttle(log, 10*time.Second, "syncing a limit's buckets with PostgreSQL failed; retrying with backoff")}
	if err := lims.apply(sec.limits); err != nil {
		return err
	}
	namedLims = lims
	routes, err := routeTable(sec, pools.byName(), lims.byName(), log)
	if err != nil {
		return err
	}
	px.SetRoutes(routes)
	px.SetDeny(sec.deny)
	px.SetExempt(sec.exempt)
	proxyServer := &fasthttp.Server{
		Handler:                       px.ServeHTTP,
		Name:                          "",
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		NoDefaultDate:                 false,
		DisableHeaderNamesNormalizing: true,
		DisablePreParseMultipartForm:  true,
		ReadTimeout:                   cfg.ReadTimeout,
		WriteTimeout:                  cfg.WriteTimeout,
		IdleTimeout:                   cfg.IdleTimeout,
		// Bodies stream: this much of one is read ahead into memory, the
		// rest flows through as the backend takes it.
		StreamRequestBody:  true,
		MaxRequestBodySize: upstream.SmallBody,
		ReadBufferSize:     cfg.MaxHeaderSize,
		Concurrency:        cfg.MaxClientConns,
		CloseOnShutdown:    true,
		ErrorHandler:       px.ServerErrorHandler,
		Logger:             fasthttpLogger{log},
	}
	api := admin.New(admin.Config{Token: cfg.AdminToken, DefaultLimit: cfg.APIDefaultLimit, RatePerSec: cfg.RatePerSec(),
		Hosts: cfg.AdminHosts, Pprof: cfg.Pprof, NewBackend: newBackend, SaveBackend: saveBackend, Pools: pools.list, Limits: lims.list},
		lim, backendPool, metrics.New(metrics.Sources{Proxy: px, Pool: backendPool, Pools: pools.list, Limits: lims.list, Limiter: lim, Persist: cfg.DatabaseURL != "", AccessLogDropped: access.DroppedFunc(),
			RejectedConns: func() uint64 { return uint64(proxyServer.GetRejectedConnectionsCount()) },
			Capacity:      cfg.BucketCapacity, RefillPerSec: cfg.RatePerSec()}), log)
	adminServer := &fasthttp.Server{
		Handler:            api.Handler(),
		Name:               "gopher-equalizer-admin",
		ReadTimeout:        10 * time.Second,
		WriteTimeout:       30 * time.Second,
		MaxRequestBodySize: 64 << 10,
		CloseOnShutdown:    true,
		ErrorHandler:       admin.ServerErrorHandler,
		Logger:             fasthttpLogger{log},
	}

	proxyLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("EQUALIZER_LISTEN: %w", err)
	}
	proxyLn = deadlines.Listener(proxyLn)
	var certs *certStore
	if cfg.TLSCert != "" {
		cert, err := loadCert(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			proxyLn.Close()
			return fmt.Errorf("EQUALIZER_TLS_CERT: %w", err)
		}
		certs = &certStore{}
		certs.cert.Store(cert)
		proxyLn = tls.NewListener(proxyLn, certs.tlsConfig(cfg.HTTP2))
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		proxyLn.Close()
		return fmt.Errorf("EQUALIZER_ADMIN_LISTEN: %w", err)
	}

	checker := pool.NewChecker(backendPool, healthConfig(cfg), log)
	background.Go(func() { checker.Run(healthCtx) })
	persistDone := make(chan error, 1)
	go func() {
		if cfg.DatabaseURL == "" {
			// Nothing outlives the process, so there is nothing to flush;
			// admin writes still go through the memory store.
			lim.RunSweeper(persistCtx)
			persistDone <- nil
			return
		}
		storeErrors := throttle(log, 10*time.Second, "syncing buckets with PostgreSQL failed; retrying with backoff")
		persistDone <- lim.RunPersister(persistCtx, min(cfg.SyncInterval, cfg.PersistInterval), cfg.ShutdownTimeout, storeErrors)
	}()
	if pg, ok := store.(*pgstore.Store); ok {
		// Admin changes made on any instance, and the purge of unused rows.
		background.Go(func() {
			listener.Run(persistCtx, throttle(log, 10*time.Second, "admin changes of other instances not received; reconnecting"))
		})
		background.Go(func() {
			pg.RunPurge(persistCtx, cfg.BucketTTL, min(cfg.BucketTTL/24, time.Hour), throttle(log, time.Minute, "purging unused bucket rows failed"))
		})
	}

	accessCtx, stopAccess := context.WithCancel(context.Background())
	if access != nil {
		go access.Run(accessCtx)
		defer onSignal(syscall.SIGUSR1, access.Reopen)()
	}

	reload := &reloader{cfg: cfg, environ: env, pool: backendPool, checker: checker, pools: pools, limits: lims, proxy: px, lim: lim, pg: pgStore,
		access: access, certs: certs, newBackend: newBackend, applyStored: applyStored, log: log}
	defer onSignal(syscall.SIGHUP, func() { reload.reload() })()

	serveErr := make(chan error, 2)
	clientLn := px.Listener(proxyLn, certs != nil)
	var h2 *proxy.HTTP2
	if cfg.HTTP2 {
		if h2, err = px.NewHTTP2(proxy.HTTP2Config{MaxConcurrentStreams: uint32(cfg.HTTP2MaxStreams), MaxHeaderBytes: cfg.MaxHeaderSize,
			HandshakeTimeout: cfg.ReadTimeout, IdleTimeout: cfg.IdleTimeout, WriteTimeout: cfg.StreamIdleTimeout,
			MaxConns: int64(cfg.MaxClientConns)}); err != nil {
			stopAccess()
			proxyLn.Close()
			adminLn.Close()
			return fmt.Errorf("EQUALIZER_HTTP2: %w", err)
		}
		clientLn = h2.Listener(proxyLn, certs != nil)
	}
	go func() { serveErr <- proxyServer.Serve(clientLn) }()
	go func() { serveErr <- adminServer.Serve(adminLn) }()
	log.Info().Str("listen", proxyLn.Addr().String()).Str("admin", adminLn.Addr().String()).
		Strs("backends", cfg.Backends).Str("strategy", cfg.Strategy).Str("client_key", cfg.ClientKey).
		Int64("bucket_capacity", cfg.BucketCapacity).Float64("rate_per_sec", cfg.RatePerSec()).
		Bool("postgres", cfg.DatabaseURL != "").Bool("tls", certs != nil).Bool("http2", cfg.HTTP2).Msg("gopher-equalizer started")

	var runErr error
	select {
	case sig := <-signals:
		log.Info().Str("signal", sig.String()).Dur("timeout", cfg.ShutdownTimeout).Msg("shutting down: draining requests")
	case runErr = <-serveErr:
		log.Error().Err(runErr).Msg("listener failed")
	}

	// 1. Tell load balancers, stop accepting, let in-flight requests finish.
	api.SetDraining()
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	h2Drained := make(chan error, 1)
	go func() {
		if h2 == nil {
			h2Drained <- nil
			return
		}
		h2Drained <- h2.Shutdown(drainCtx) // GOAWAY, then the streams finish
	}()
	if err := proxyServer.ShutdownWithContext(drainCtx); err != nil {
		log.Warn().Err(err).Msg("drain timed out: open connections were closed")
	}
	if err := <-h2Drained; err != nil {
		log.Warn().Err(err).Msg("HTTP/2 drain timed out: open HTTP/2 connections were closed")
	}
	cancelDrain()
	if n := px.CloseTunnels(); n > 0 {
		log.Info().Int("tunnels", n).Msg("closed open Upgrade tunnels")
	}
	// 2. No traffic left: stop probing backends, write the last access
	// log lines.
	stopHealth()
	stopAccess()
	if access != nil {
		access.Wait()
	}
	// 3. Write every changed bucket (the persister's final flush).
	stopPersist()
	if err := <-persistDone; err != nil {
		log.Error().Err(err).Msg("final flush failed: spending since the last flush is lost")
		runErr = errors.Join(runErr, err)
	} else if cfg.DatabaseURL != "" {
		log.Info().Msg("buckets flushed to PostgreSQL")
	}
	// 4. The admin API stays up until here so /readyz and /metrics answer
	// during the drain.
	adminCtx, cancelAdmin := context.WithTimeout(context.Background(), time.Second)
	_ = adminServer.ShutdownWithContext(adminCtx)
	cancelAdmin()
	background.Wait()
	log.Info().Msg("stopped")
	return runErr
}

// openStore picks the bucket store: PostgreSQL when a URL is set, memory
// otherwise.
func openStore(cfg Config, log zerolog.Logger) (limiter.Store, func(), error) {
	if cfg.DatabaseURL == "" {
		log.Warn().Msg("EQUALIZER_DATABASE_URL is empty: buckets are kept in memory only and nothing survives a restart")
		return limiter.NewMemoryStore(), func() {}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DatabaseConnectTimeout)
	defer cancel()
	st, err := pgstore.Open(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return nil, nil, fmt.Errorf("EQUALIZER_DATABASE_URL: %w", err)
	}
	return st, st.Close, nil
}

// onSignal runs f, one call at a time, each time sig arrives, until the
// returned stop is called.
func onSignal(sig os.Signal, f func()) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sig)
	go func() {
		for range ch {
			f()
		}
	}()
	return func() { signal.Stop(ch); close(ch) }
}

// openAccessLog opens EQUALIZER_ACCESS_LOG; nil when it is off.
func openAccessLog(cfg Config, log zerolog.Logger) (*accesslog.Log, error) {
	if cfg.AccessLog == "off" {
		return nil, nil
	}
	l, err := accesslog.Open(cfg.AccessLog, throttle(log, 10*time.Second, "writing the access log failed"))
	if err != nil {
		return nil, fmt.Errorf("EQUALIZER_ACCESS_LOG: %w", err)
	}
	return l, nil
}

// throttle returns an error reporter that logs at most one line per period
// with the number of errors it swallowed in between.
func throttle(log zerolog.Logger, every time.Duration, msg string) func(error) {
	var last time.Time
	skipped := 0
	return func(err error) {
		if time.Since(last) < every {
			skipped++
			return
		}
		log.Error().Err(err).Int("suppressed", skipped).Msg(msg)
		last, skipped = time.Now(), 0
	}
}

// fasthttpLogger sends fasthttp's own messages to zerolog at debug level:
// they are per connection, so they stay out of the info log.
type fasthttpLogger struct{ log zerolog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) { l.log.Debug().Msgf(format, args...) }

// deadlineTick is how late a client or backend timeout may fire.
const deadlineTick = 50 * time.Millisecond
