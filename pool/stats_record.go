//go:build !nometrics

package pool

import "time"

// The recording half of Stats. A build with -tags nometrics replaces it
// with no-ops (stats_norecord.go), the baseline that measures what metrics
// cost in the wrk suite.

// Start counts a request sent to the backend.
func (s *Stats) Start() { s.requests.Add(1) }

// Answered records a response head that arrived d after Start.
func (s *Stats) Answered(status int, d time.Duration) {
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	s.classes[class].Add(1)
	s.Latency.Observe(d)
}

// Failed records a round trip that ended in err.
func (s *Stats) Failed(err error) {
	s.failures[ReasonOf(err)].Add(1)
}

// Rejected records a response that arrived but could not be used (a 101
// nobody asked for): answered by the backend, failed for the client.
func (s *Stats) Rejected() { s.failures[ReasonMalformed].Add(1) }
