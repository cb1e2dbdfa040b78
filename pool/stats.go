package pool

import (
	"errors"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/histogram"
	"gopher-equalizer/upstream"
)

// Stats are a backend's counters for /metrics and the status page: plain
// atomics, written on the request path without a lock or an allocation.
type Stats struct {
	requests atomic.Uint64
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
	switch upstream.StageOf(err) {
	case upstream.StageConnect:
		return ReasonConnect
	case upstream.StageSend, upstream.StageAwait:
		return ReasonReset
	}
	return ReasonMalformed
}

// Requests is how many requests were sent (retries count once each).
func (s *Stats) Requests() uint64 { return s.requests.Load() }

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
