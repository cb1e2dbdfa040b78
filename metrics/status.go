package metrics

import (
	"strconv"
	"sync"
	"time"

	"gopher-equalizer/histogram"
	"gopher-equalizer/limits"
	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
)

// The status page's data: the same counters as /metrics, with rates and
// latency quantiles over the last few seconds, which the page cannot get
// from a Prometheus server it may not have.

// Status is the JSON the status page polls.
type Status struct {
	Time          time.Time         `json:"time"`
	UptimeSeconds float64           `json:"uptime_seconds"`
	WindowSeconds float64           `json:"window_seconds"` // what the rates and quantiles cover
	Requests      map[string]uint64 `json:"requests"`       // by outcome, since start
	RequestsPerS  float64           `json:"requests_per_sec"`
	OpenConns     int64             `json:"open_connections"`
	OpenTunnels   int               `json:"open_tunnels"`
	OpenHTTP2     int64             `json:"open_http2_connections"`
	HTTP2Requests uint64            `json:"http2_requests"`
	Routes        []RouteStatus     `json:"routes"`
	Limits        []LimitStatus     `json:"limits"`
	Backends      []BackendStatus   `json:"backends"`
	Limiter       *LimiterStatus    `json:"limiter,omitempty"`
	Store         StoreStatus       `json:"store"`
	AccessDropped uint64            `json:"access_log_dropped"`
}

// LimitStatus is one limit's line on the page.
type LimitStatus struct {
	Name      string            `json:"name"`
	Key       string            `json:"key"`
	Rule      string            `json:"rule"` // "5 per 1m0s", "20 in flight"
	Mode      string            `json:"mode"`
	Buckets   int               `json:"buckets"`
	Decisions map[string]uint64 `json:"decisions"`
}

// RouteStatus is one route's line on the page, in table order.
type RouteStatus struct {
	Name        string `json:"name"`
	Match       string `json:"match"`
	Pool        string `json:"pool"`
	StripPrefix bool   `json:"strip_prefix"`
	Requests    uint64 `json:"requests"`
	Forwarded   uint64 `json:"forwarded"`
	Limited     uint64 `json:"limited"`
}

// BackendStatus is one backend's line on the page.
type BackendStatus struct {
	Pool         string            `json:"pool"`
	URL          string            `json:"url"`
	Healthy      bool              `json:"healthy"`
	State        string            `json:"state"` // active, draining, drained
	Weight       int               `json:"weight"`
	InFlight     int64             `json:"in_flight"`
	Requests     uint64            `json:"requests"`
	RequestsPerS float64           `json:"requests_per_sec"`
	P50Ms        float64           `json:"p50_ms"`
	P99Ms        float64           `json:"p99_ms"`
	Errors       uint64            `json:"errors"`
	ErrorsPerS   float64           `json:"errors_per_sec"`
	Responses    map[string]uint64 `json:"responses"` // by status class
	Failures     map[string]uint64 `json:"failures"`  // by reason
}

// LimiterStatus sums up the limiter.
type LimiterStatus struct {
	Buckets      int             `json:"buckets"`
	Evictions    uint64          `json:"evictions"`
	Debts        int             `json:"debts"`
	Admitted     uint64          `json:"admitted"`
	Limited      uint64          `json:"limited"`
	TableFull    uint64          `json:"table_full"`
	LimitedPerS  float64         `json:"limited_per_sec"`
	MostLimited  []LimitedClient `json:"most_limited"`
	Capacity     int64           `json:"default_capacity"`
	RefillPerSec float64         `json:"default_refill_per_sec"`
}

// LimitedClient is a client out of tokens.
type LimitedClient struct {
	ClientID    string  `json:"client_id"`
	Capacity    int64   `json:"capacity"`
	WaitSeconds float64 `json:"wait_seconds"` // until its next token
	Managed     bool    `json:"managed"`
}

// StoreStatus is where buckets are kept and how syncing goes.
type StoreStatus struct {
	Kind         string     `json:"kind"` // postgres or memory
	RowsSynced   uint64     `json:"rows_synced"`
	SyncErrors   uint64     `json:"sync_errors"`
	LastSuccess  *time.Time `json:"last_success,omitempty"`
	SyncP99Ms    float64    `json:"sync_p99_ms"`
	DirtyBuckets int        `json:"dirty_buckets"`
}

// sample is the counters at one moment, to take rates from.
type sample struct {
	at       time.Time
	total    uint64
	limited  uint64
	backends map[*pool.Backend]backendSample
	sync     histogram.Snapshot
}

type backendSample struct {
	requests, errors uint64
	latency          histogram.Snapshot
}

// sampler keeps the last two samples; rates are taken between them, so
// any number of open pages see the same numbers.
type sampler struct {
	mu         sync.Mutex
	start      time.Time
	prev, last *sample
}

// minWindow is the shortest time rates are taken over.
const minWindow = time.Second

func (r *Registry) take(now time.Time) *sample {
	src := r.src
	s := &sample{at: now, backends: map[*pool.Backend]backendSample{}}
	for o := range proxy.NumOutcomes {
		s.total += src.Proxy.Stats.Requests[o].Load()
	}
	s.limited = src.Proxy.Stats.Requests[proxy.Limited].Load()
	for _, np := range src.pools() {
		for _, b := range np.Pool.Backends() {
			s.backends[b] = backendSample{requests: b.Stats.Requests(), errors: b.Stats.FailuresTotal(), latency: b.Stats.Latency.Snapshot()}
		}
	}
	if src.Limiter != nil {
		s.sync = src.Limiter.SyncStats.Duration.Snapshot()
	}
	return s
}

// Status reads everything for the status page.
func (r *Registry) Status() Status {
	now := time.Now()
	r.sampler.mu.Lock()
	if r.sampler.last == nil || now.Sub(r.sampler.last.at) >= minWindow {
		r.sampler.prev, r.sampler.last = r.sampler.last, r.take(now)
	}
	prev, last := r.sampler.prev, r.sampler.last
	r.sampler.mu.Unlock()
	if prev == nil {
		prev = &sample{at: r.sampler.start, backends: map[*pool.Backend]backendSample{}}
	}
	window := last.at.Sub(prev.at).Seconds()
	rate := func(a, b uint64) float64 {
		if window <= 0 || a < b {
			return 0
		}
		return float64(a-b) / window
	}

	src := r.src
	st := &src.Proxy.Stats
	out := Status{
		Time: now, UptimeSeconds: now.Sub(r.sampler.start).Seconds(), WindowSeconds: window,
		Requests:      map[string]uint64{},
		RequestsPerS:  rate(last.total, prev.total),
		OpenConns:     st.OpenConns.Load(),
		OpenHTTP2:     st.OpenHTTP2.Load(),
		HTTP2Requests: st.HTTP2.Load(),
		OpenTunnels:   src.Proxy.OpenTunnels(),
		Store:         StoreStatus{Kind: "memory"},
	}
	for o := range proxy.NumOutcomes {
		out.Requests[proxy.OutcomeNames[o]] = st.Requests[o].Load()
	}
	for _, rt := range src.Proxy.Routes().Routes() {
		rs := RouteStatus{Name: rt.Name, Match: rt.Match(), Pool: rt.PoolName, StripPrefix: rt.StripPrefix}
		if rt.Counts != nil {
			for o := range proxy.NumOutcomes {
				rs.Requests += rt.Counts[o].Load()
			}
			rs.Forwarded, rs.Limited = rt.Counts[proxy.Forwarded].Load(), rt.Counts[proxy.Limited].Load()
		}
		out.Routes = append(out.Routes, rs)
	}
	if src.Limits != nil {
		for _, l := range src.Limits() {
			out.Limits = append(out.Limits, limitStatus(l))
		}
	}
	for _, np := range src.pools() {
		for _, b := range np.Pool.Backends() {
			out.Backends = append(out.Backends, backendStatus(np.Name, b, last.backends[b], prev.backends[b], rate))
		}
	}
	if l := src.Limiter; l != nil {
		ls := &LimiterStatus{
			Buckets: l.Len(), Evictions: l.Evictions(), Debts: l.Debts(),
			Admitted: st.Admitted.Load(), Limited: st.Requests[proxy.Limited].Load(), TableFull: st.Requests[proxy.TableFull].Load(),
			LimitedPerS: rate(last.limited, prev.limited),
			MostLimited: []LimitedClient{},
			Capacity:    src.Capacity, RefillPerSec: src.RefillPerSec,
		}
		for _, c := range l.MostLimited(10, now.UnixNano()) {
			ls.MostLimited = append(ls.MostLimited, LimitedClient{ClientID: c.ClientID, Capacity: c.Capacity, WaitSeconds: c.Wait.Seconds(), Managed: c.Managed})
		}
		out.Limiter = ls
		if src.Persist {
			ss := &l.SyncStats
			recent := last.sync.Sub(prev.sync)
			out.Store = StoreStatus{Kind: "postgres", RowsSynced: ss.Rows.Load(), SyncErrors: ss.Errors.Load(),
				SyncP99Ms: recent.Quantile(0.99) * 1000, DirtyBuckets: l.DirtyLen()}
			if ns := ss.LastSuccess.Load(); ns > 0 {
				t := time.Unix(0, ns)
				out.Store.LastSuccess = &t
			}
		}
	}
	if src.AccessLogDropped != nil {
		out.AccessDropped = src.AccessLogDropped()
	}
	return out
}

// backendStatus is b's line, with rates between two samples.
func backendStatus(poolName string, b *pool.Backend, cur, old backendSample, rate func(a, b uint64) float64) BackendStatus {
	recent := cur.latency.Sub(old.latency)
	bs := BackendStatus{
		Pool: poolName, URL: b.URL, Healthy: b.Healthy(), Weight: b.Weight(), State: b.State().String(), InFlight: b.InFlight(),
		Requests: b.Stats.Requests(), RequestsPerS: rate(cur.requests, old.requests),
		P50Ms: recent.Quantile(0.5) * 1000, P99Ms: recent.Quantile(0.99) * 1000,
		Errors: b.Stats.FailuresTotal(), ErrorsPerS: rate(cur.errors, old.errors),
		Responses: map[string]uint64{}, Failures: map[string]uint64{},
	}
	for class := 1; class <= 5; class++ {
		bs.Responses[string(rune('0'+class))+"xx"] = b.Stats.Responses(class)
	}
	for i, name := range pool.ReasonNames {
		bs.Failures[name] = b.Stats.Failures(pool.Reason(i))
	}
	return bs
}

// limitStatus is l's line.
func limitStatus(l *limits.Limit) LimitStatus {
	ls := LimitStatus{Name: l.Name, Key: l.KeyText, Mode: l.Mode.String(), Decisions: map[string]uint64{}}
	switch {
	case l.Concurrency > 0:
		ls.Rule = strconv.FormatInt(l.Concurrency, 10) + " in flight"
		ls.Buckets = l.InFlight.Keys()
	default:
		ls.Rule = strconv.FormatInt(l.Capacity, 10) + " at once, " + strconv.FormatFloat(l.Rate, 'g', 6, 64) + "/s"
		if l.Delay > 0 {
			ls.Rule += ", delay " + l.Delay.String()
		}
		ls.Buckets = l.Lim.Len()
	}
	for r := range limits.NumResults {
		ls.Decisions[limits.ResultNames[r]] = l.Decisions[r].Load()
	}
	return ls
}
