//go:build nometrics

package pool

import "time"

// No-op recording: see stats_record.go.

func (s *Stats) Start()                               {}
func (s *Stats) Answered(status int, d time.Duration) {}
func (s *Stats) Failed(err error)                     {}
func (s *Stats) Abandoned()                           {}
func (s *Stats) Rejected()                            {}
