package admin

import (
	"fmt"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"

	"gopher-equalizer/limiter"
	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
)

// NewMetrics builds the /metrics set. Every value is read at scrape time
// from the atomics the request path already keeps, so metrics add no work
// per request.
func NewMetrics(stats *proxy.Stats, p *pool.Pool, lim *limiter.Limiter, openTunnels func() int) *metrics.Set {
	set := metrics.NewSet()
	counter := func(name string, v *atomic.Uint64) {
		set.NewGauge(name, func() float64 { return float64(v.Load()) })
	}
	counter(`equalizer_requests_total{outcome="forwarded"}`, &stats.Forwarded)
	counter(`equalizer_requests_total{outcome="limited"}`, &stats.Limited)
	counter(`equalizer_requests_total{outcome="bad_gateway"}`, &stats.BadGateway)
	counter(`equalizer_requests_total{outcome="unavailable"}`, &stats.Unavailable)
	counter(`equalizer_requests_total{outcome="timeout"}`, &stats.Timeout)
	counter(`equalizer_requests_total{outcome="bad_request"}`, &stats.BadRequest)
	counter(`equalizer_requests_total{outcome="too_large"}`, &stats.TooLarge)
	counter(`equalizer_tunnels_total`, &stats.Tunnels)
	for _, b := range p.Backends() {
		set.NewGauge(fmt.Sprintf(`equalizer_backend_requests_total{backend=%q}`, b.URL), func() float64 { return float64(b.Requests()) })
		set.NewGauge(fmt.Sprintf(`equalizer_backend_failures_total{backend=%q}`, b.URL), func() float64 { return float64(b.Failures()) })
		set.NewGauge(fmt.Sprintf(`equalizer_backend_discarded_connections_total{backend=%q}`, b.URL), func() float64 { return float64(b.DiscardedConns()) })
		set.NewGauge(fmt.Sprintf(`equalizer_backend_unsolicited_responses_total{backend=%q}`, b.URL), func() float64 { return float64(b.Unsolicited()) })
		set.NewGauge(fmt.Sprintf(`equalizer_backend_healthy{backend=%q}`, b.URL), func() float64 {
			if b.Healthy() {
				return 1
			}
			return 0
		})
	}
	if openTunnels != nil {
		set.NewGauge(`equalizer_open_tunnels`, func() float64 { return float64(openTunnels()) })
	}
	set.NewGauge(`equalizer_healthy_backends`, func() float64 { return float64(len(p.Healthy())) })
	set.NewGauge(`equalizer_buckets`, func() float64 { return float64(lim.Len()) })
	set.NewGauge(`equalizer_bucket_evictions_total`, func() float64 { return float64(lim.Evictions()) })
	set.NewGauge(`equalizer_bucket_debts`, func() float64 { return float64(lim.Debts()) })
	set.NewGauge(`equalizer_bucket_table_full_total`, func() float64 { return float64(lim.RefusedFull()) })
	return set
}
