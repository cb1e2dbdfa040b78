// Package metrics exposes the counters the request path keeps (plain
// atomics in proxy, pool and limiter) as Prometheus metrics, read at scrape
// time: metrics add no work per request beyond those atomics. client_golang
// writes the exposition (HELP, TYPE, histograms, Go runtime and process
// metrics), so promtool accepts it.
package metrics

import (
	"io"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"gopher-equalizer/histogram"
	"gopher-equalizer/limiter"
	"gopher-equalizer/limits"
	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
	"gopher-equalizer/route"
)

// Sources are what the metrics read.
type Sources struct {
	Proxy *proxy.Proxy
	Pool  *pool.Pool // the pool "default"
	// Pools lists every pool, "default" first (nil: Pool only).
	Pools func() []NamedPool
	// Limits lists every limit, "default" first (nil: none besides it).
	Limits  func() []*limits.Limit
	Limiter *limiter.Limiter // nil: limiting off
	// Persist is set when a store is synced (PostgreSQL).
	Persist bool
	// AccessLogDropped counts access log lines dropped (nil: no access log).
	AccessLogDropped func() uint64
	// RejectedConns counts client connections the server refused because
	// EQUALIZER_MAX_CLIENT_CONNS were open (it answers them 503 itself,
	// before any request is read, so the request counters never see them).
	RejectedConns func() uint64
	// Capacity and RefillPerSec are the default bucket, for the status page.
	Capacity     int64
	RefillPerSec float64
}

// NamedPool is a pool and its name in the configuration.
type NamedPool struct {
	Name string
	Pool *pool.Pool
}

// Registry serves /metrics and the status page's data.
type Registry struct {
	reg     *prometheus.Registry
	src     Sources
	sampler sampler
}

// New registers the proxy's metrics, the Go runtime's and the process's.
func New(src Sources) *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(&collector{src: src})
	return &Registry{reg: reg, src: src, sampler: sampler{start: time.Now()}}
}

// ContentType is the exposition format WritePrometheus writes.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WritePrometheus writes every metric in the text exposition format.
func (r *Registry) WritePrometheus(w io.Writer) error {
	families, err := r.reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range families {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	requestsDesc = desc("equalizer_requests_total",
		"Requests by how they ended: forwarded (a backend answered), or the proxy's own answer: limited 429, table_full 503, bad_request 400, request_timeout 408, body_too_large 413, header_too_large 431, bad_gateway 502, unavailable 503, gateway_timeout 504.",
		"outcome")
	openConnsDesc     = desc("equalizer_open_connections", "Client connections open on the proxy listener.")
	http2Desc         = desc("equalizer_http2_requests_total", "Of equalizer_requests_total, the requests whose client spoke HTTP/2 (the rest spoke HTTP/1.x).")
	openHTTP2Desc     = desc("equalizer_open_http2_connections", "Of the open client connections, those speaking HTTP/2.")
	rejectedDesc      = desc("equalizer_rejected_connections_total", "Client connections refused with a 503 because EQUALIZER_MAX_CLIENT_CONNS were open.")
	openTunnelsDesc   = desc("equalizer_open_tunnels", "Upgrade tunnels (WebSocket and others) open.")
	tunnelsDesc       = desc("equalizer_tunnels_total", "Upgrade tunnels opened.")
	healthyDesc       = desc("equalizer_healthy_backends", "Backends in rotation.")
	routeRequestsDesc = desc("equalizer_route_requests_total", "Requests each route took, by how they ended (the outcomes of equalizer_requests_total). Requests answered before routing (bad_request, request_timeout, header_too_large, no_route, denied) have no route.",
		"route", "outcome")
	limitDelayDesc     = desc("equalizer_limit_delay_seconds", "How long delayed requests waited for their token (a limit's delay).")
	limitDecisionsDesc = desc("equalizer_limit_decisions_total", "Decisions of each limit: allowed (a token charged), limited (refused, 429), delayed (waited for its token, then let through), would_limit (a shadow limit found no token and let the request through).", "limit", "result")
	backendPoolDesc    = desc("equalizer_backend_pool", "1 for each pool a backend belongs to: join the backend_* series on backend to get their pool.", "backend", "pool")

	backendRequestsDesc  = desc("equalizer_backend_requests_total", "Requests sent to a backend, retries included.", "backend")
	backendResponsesDesc = desc("equalizer_backend_responses_total", "Response heads received from a backend, by status class.", "backend", "code")
	backendFailuresDesc  = desc("equalizer_backend_failures_total", "Round trips to a backend that failed, by reason: connect, timeout, reset, malformed.", "backend", "reason")
	backendInFlightDesc  = desc("equalizer_backend_in_flight", "Requests sent to a backend and waiting for its response head.", "backend")
	backendUpDesc        = desc("equalizer_backend_up", "1 when the backend is in rotation (healthy), else 0.", "backend")
	backendLatencyDesc   = desc("equalizer_backend_response_seconds", "Time from sending a request to a backend to its response head.", "backend")
	backendDiscardedDesc = desc("equalizer_backend_discarded_connections_total", "Idle backend connections closed instead of reused (closed by the backend, or holding bytes nobody asked for).", "backend")
	backendUnsolicitDesc = desc("equalizer_backend_unsolicited_responses_total", "Backend connections closed because the backend sent bytes that answer no request.", "backend")

	decisionsDesc = desc("equalizer_limiter_decisions_total", "Limiter decisions: admitted, limited (429), table_full (no bucket could be made).", "decision")
	bucketsDesc   = desc("equalizer_limiter_buckets", "Buckets held in memory.")
	evictionsDesc = desc("equalizer_limiter_evictions_total", "Buckets evicted from memory.")
	debtsDesc     = desc("equalizer_limiter_debts", "Evicted buckets remembered for their debt.")

	syncDurationDesc  = desc("equalizer_store_sync_duration_seconds", "Duration of each sync of spending with PostgreSQL that sent rows.")
	syncRowsDesc      = desc("equalizer_store_rows_synced_total", "Bucket rows sent to PostgreSQL.")
	syncRefilledDesc  = desc("equalizer_store_rows_refilled_total", "Bucket rows not sent to PostgreSQL because the bucket refilled to full since its spending (the row would not change).")
	syncRefreshedDesc = desc("equalizer_store_rows_refreshed_total", "Buckets held here that took the state another instance's sync wrote (read from the sync feed).")
	syncErrorsDesc    = desc("equalizer_store_sync_errors_total", "Syncs with PostgreSQL that failed (retried with backoff).")
	syncLastDesc      = desc("equalizer_store_last_success_timestamp_seconds", "Unix time of the last sync with PostgreSQL that went through.")

	accessDroppedDesc = desc("equalizer_access_log_dropped_total", "Access log lines dropped because the buffer to the log file was full.")
)

// collector reads the atomics at scrape time.
type collector struct{ src Sources }

// Describe sends nothing: the collector is unchecked, its backends and
// families depend on the configuration.
func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := &c.src.Proxy.Stats
	for o := range proxy.NumOutcomes {
		counter(requestsDesc, st.Requests[o].Load(), proxy.OutcomeNames[o])
	}
	gauge(openConnsDesc, float64(st.OpenConns.Load()))
	counter(http2Desc, st.HTTP2.Load())
	gauge(openHTTP2Desc, float64(st.OpenHTTP2.Load()))
	gauge(openTunnelsDesc, float64(c.src.Proxy.OpenTunnels()))
	counter(tunnelsDesc, st.Tunnels.Load())
	gauge(healthyDesc, float64(len(c.src.Pool.Healthy())))

	// A backend listed in two pools is two Backends with one URL: its
	// series are the first pool's (the label set must be unique).
	seen := map[string]bool{}
	for _, named := range c.src.pools() {
		for _, b := range named.Pool.Backends() {
			gauge(backendPoolDesc, 1, b.URL, named.Name)
			if seen[b.URL] {
				continue
			}
			seen[b.URL] = true
			c.backend(ch, b, counter, gauge)
		}
	}
	ch <- constHistogram(limitDelayDesc, st.Delay.Snapshot())
	if c.src.Limits != nil {
		for _, l := range c.src.Limits() {
			for r := range limits.NumResults {
				counter(limitDecisionsDesc, l.Decisions[r].Load(), l.Name, limits.ResultNames[r])
			}
		}
	}
	routeTotals := map[string]*route.Counts{}
	c.src.Proxy.RouteCounts.Each(func(name string, n *route.Counts) { routeTotals[name] = n })
	for name, n := range routeTotals {
		for o := range proxy.NumOutcomes {
			if v := n[o].Load(); v > 0 {
				counter(routeRequestsDesc, v, name, proxy.OutcomeNames[o])
			}
		}
	}

	if l := c.src.Limiter; l != nil {
		counter(decisionsDesc, st.Admitted.Load(), "admitted")
		counter(decisionsDesc, st.Requests[proxy.Limited].Load(), "limited")
		counter(decisionsDesc, st.Requests[proxy.TableFull].Load(), "table_full")
		gauge(bucketsDesc, float64(l.Len()))
		counter(evictionsDesc, l.Evictions())
		gauge(debtsDesc, float64(l.Debts()))
		if c.src.Persist {
			ss := &l.SyncStats
			ch <- constHistogram(syncDurationDesc, ss.Duration.Snapshot())
			counter(syncRowsDesc, ss.Rows.Load())
			counter(syncRefilledDesc, ss.Refilled.Load())
			counter(syncRefreshedDesc, ss.Refreshed.Load())
			counter(syncErrorsDesc, ss.Errors.Load())
			gauge(syncLastDesc, float64(ss.LastSuccess.Load())/float64(time.Second))
		}
	}
	if c.src.AccessLogDropped != nil {
		counter(accessDroppedDesc, c.src.AccessLogDropped())
	}
	if c.src.RejectedConns != nil {
		counter(rejectedDesc, c.src.RejectedConns())
	}
}

// constHistogram turns a snapshot (per-bucket counts) into the cumulative
// buckets Prometheus wants.
func constHistogram(d *prometheus.Desc, s histogram.Snapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(histogram.Bounds))
	var cum uint64
	for i, le := range histogram.Bounds {
		cum += s.Counts[i]
		buckets[le] = cum
	}
	return prometheus.MustNewConstHistogram(d, s.Count(), s.Sum.Seconds(), buckets, labels...)
}

// backend emits one backend's series.
func (c *collector) backend(ch chan<- prometheus.Metric, b *pool.Backend, counter func(*prometheus.Desc, uint64, ...string), gauge func(*prometheus.Desc, float64, ...string)) {
	s := &b.Stats
	counter(backendRequestsDesc, s.Requests(), b.URL)
	for class := 1; class <= 5; class++ {
		counter(backendResponsesDesc, s.Responses(class), b.URL, strconv.Itoa(class)+"xx")
	}
	counter(backendResponsesDesc, s.Responses(0), b.URL, "other")
	for r, name := range pool.ReasonNames {
		counter(backendFailuresDesc, s.Failures(pool.Reason(r)), b.URL, name)
	}
	gauge(backendInFlightDesc, float64(b.InFlight()), b.URL)
	up := 0.0
	if b.Healthy() {
		up = 1
	}
	gauge(backendUpDesc, up, b.URL)
	ch <- constHistogram(backendLatencyDesc, s.Latency.Snapshot(), b.URL)
	counter(backendDiscardedDesc, b.DiscardedConns(), b.URL)
	counter(backendUnsolicitDesc, b.Unsolicited(), b.URL)
}

// pools are the named pools, "default" first.
func (src *Sources) pools() []NamedPool {
	if src.Pools != nil {
		return src.Pools()
	}
	return []NamedPool{{Name: "default", Pool: src.Pool}}
}
