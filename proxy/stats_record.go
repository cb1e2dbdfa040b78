//go:build !nometrics

package proxy

// The counting half of Stats; -tags nometrics makes it no-ops
// (stats_norecord.go) for the wrk suite's metrics-off baseline.

func (s *Stats) count(o Outcome) { s.Requests[o].Add(1) }
func (s *Stats) admit()          { s.Admitted.Add(1) }
func (s *Stats) tunnel()         { s.Tunnels.Add(1) }
