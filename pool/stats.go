package pool

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/histogram"
)

// Stats are a backend's counters for /metrics and the status page: plain
// atomics, written on the request path without a lock or an allocation.
type Stats struct {
	requests atomic.Uint64
	inFlight atomic.Int64
	// classes counts responses by status class: [1] is 1xx ... [5] is 5xx,
	// [0] anything else.
	classes  [6]atomic.Uint64
	failures [numReasons]atomic.Uint64
	Latency  histogram.Histogram // the upstream round trip, to the response head
}

// Reason says why a forward failed, for failures_total{reason}.
type Reason uint8

const (
	ReasonConnect   Reason = iota // no connection: refused, dial timeout, connection limit
	ReasonTimeout                 // no response head within EQUALIZER_BACKEND_TIMEOUT
	ReasonReset                   // the connection died while sending or awaiting
	ReasonMalformed               // the response was cut, unparsable, or the wrong upgrade
	numReasons
)

// ReasonNames are the label values of the reasons, in order.
var ReasonNames = [numReasons]string{"connect", "timeout", "reset", "malformed"}

// ReasonOf classifies a forwarding error.
func ReasonOf(err error) Reason {
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return ReasonTimeout
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return ReasonConnect
	}
	switch StageOf(err) {
	case StageConnect:
		return ReasonConnect
	case StageSend, StageAwait:
		return ReasonReset
	}
	return ReasonMalformed
}

// Start counts a request sent to the backend and returns the time it left.
func (s *Stats) Start() time.Time {
	s.requests.Add(1)
	s.inFlight.Add(1)
	return time.Now()
}

// Answered records a response head that arrived d after Start.
func (s *Stats) Answered(status int, d time.Duration) {
	s.inFlight.Add(-1)
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	s.classes[class].Add(1)
	s.Latency.Observe(d)
}

// Failed records a round trip that ended in err.
func (s *Stats) Failed(err error) {
	s.inFlight.Add(-1)
	s.failures[ReasonOf(err)].Add(1)
}

// Abandoned ends a round trip that failed for the client's reason.
func (s *Stats) Abandoned() { s.inFlight.Add(-1) }

// Rejected records a response that arrived but could not be used (a 101
// nobody asked for): answered by the backend, failed for the client.
func (s *Stats) Rejected() { s.failures[ReasonMalformed].Add(1) }

// Requests is how many requests were sent (retries count once each).
func (s *Stats) Requests() uint64 { return s.requests.Load() }

// InFlight is how many requests await their response head.
func (s *Stats) InFlight() int64 { return s.inFlight.Load() }

// Responses is the count of responses of status class c (1 to 5; 0: other).
func (s *Stats) Responses(c int) uint64 { return s.classes[c].Load() }

// Failures is the count of failures for reason r.
func (s *Stats) Failures(r Reason) uint64 { return s.failures[r].Load() }

// FailuresTotal is the count of failures of every reason.
func (s *Stats) FailuresTotal() uint64 {
	var n uint64
	for r := range numReasons {
		n += s.failures[r].Load()
	}
	return n
}
