//go:build nometrics

package proxy

// No-op counting: see stats_record.go.

func (s *Stats) count(Outcome) {}
func (s *Stats) admit()        {}
func (s *Stats) tunnel()       {}
