package pool

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gopher-equalizer/upstream"
)

// Backend is one upstream server as the pool sees it: its weight, state
// and health, and what least_conn and p2c weigh; it talks to the server
// through its upstream.Client. The counters are read by /metrics. A
// Backend is safe for concurrent use and lives as long as the Pool that
// owns it.
type Backend struct {
	*upstream.Client

	seed uint64 // for hash
	// weight is the backend's share of traffic against the others (1 to
	// 1000, default 1), from "URL weight=N" or the /backends API.
	weight atomic.Int32
	// state is Active, Draining or Drained: only active backends are
	// picked.
	state atomic.Int32

	healthy atomic.Bool
	// inFlight and latencyNs feed least_conn and p2c; they are kept with
	// or without metrics.
	inFlight  atomic.Int64
	latencyNs atomic.Int64 // decaying average of the time to the response head
	// Stats are the counters the proxy keeps for /metrics.
	Stats Stats
	// connectFails counts connection failures in a row for passive health.
	connectFails atomic.Int32
}

// MaxWeight bounds a backend's weight.
const MaxWeight = 1000

// NewBackend parses "http://host:port" (or https://, or h2c:// for HTTP/2
// with prior knowledge) with optional settings after spaces
// ("http://10.0.0.5:8080 weight=3", as nginx writes them) and prepares its
// HostClient. A new backend counts as healthy until a probe says
// otherwise, so traffic flows from the first request.
func NewBackend(spec string, opt upstream.Options) (*Backend, error) {
	fields := strings.Fields(spec)
	if len(fields) == 0 {
		return nil, fmt.Errorf("empty backend")
	}
	rawURL := fields[0]
	weight := 1
	for _, f := range fields[1:] {
		v, ok := strings.CutPrefix(f, "weight=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 || n > MaxWeight {
			return nil, fmt.Errorf("%q: want weight=N with N from 1 to %d after the URL, got %q", spec, MaxWeight, f)
		}
		weight = n
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", rawURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "h2c") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http, https or h2c URL (want http://host:port, https://host:port or h2c://host:port)", rawURL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%q must have no path, query or user info", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr += map[string]string{"http": ":80", "https": ":443", "h2c": ":80"}[u.Scheme]
	} else if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("%q has port %s; a port is 1 to 65535", rawURL, u.Port())
	}
	b := &Backend{Client: upstream.NewClient(rawURL, addr, u.Scheme == "https", u.Scheme == "h2c", u.Hostname(), opt), seed: seedOf(rawURL)}
	b.weight.Store(int32(weight))
	b.healthy.Store(true)
	return b, nil
}

// Begin counts a request sent to the backend, for least_conn and p2c.
func (b *Backend) Begin() { b.inFlight.Add(1) }

// Done ends what Begin started; took is the wait for the response head
// (or the failure), folded into the decaying average p2c weighs.
func (b *Backend) Done(took time.Duration) {
	b.inFlight.Add(-1)
	old := b.latencyNs.Load()
	if old == 0 {
		b.latencyNs.Store(int64(took))
		return
	}
	// Weight 1/8 for the newest sample; a lost update between two
	// requests finishing at once costs nothing that matters.
	b.latencyNs.Store(old + (int64(took)-old)/8)
}

// InFlight is how many requests wait for their response head.
func (b *Backend) InFlight() int64 { return b.inFlight.Load() }

// Weight is the backend's current weight.
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// State is Active, Draining or Drained.
func (b *Backend) State() State { return State(b.state.Load()) }

// State is where a backend is in its life in the pool.
type State int32

const (
	Active   State = iota // picked when healthy
	Draining              // no new requests; removed or kept drained when its requests are done
	Drained               // kept, not picked
)

// String is the state's name in the API.
func (s State) String() string {
	switch s {
	case Draining:
		return "draining"
	case Drained:
		return "drained"
	}
	return "active"
}

// cost is what p2c compares: the expected wait behind the requests in
// flight, per unit of weight.
func (b *Backend) cost() int64 {
	return (b.inFlight.Load() + 1) * max(b.latencyNs.Load(), int64(time.Microsecond)) / int64(b.weight.Load())
}

// Healthy reports the backend's last known health.
func (b *Backend) Healthy() bool { return b.healthy.Load() }
