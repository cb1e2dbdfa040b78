package pool

import "sync/atomic"

// RoundRobin is nginx's smooth weighted round robin without its lock: the
// whole schedule of one cycle (sum of the weights picks) is computed when
// the healthy set changes, and a request takes the next entry with one
// atomic add. Weights 5, 1, 1 give a a b a c a a ..., never five a in a
// row; equal weights give plain turns. Over k equal backends, N sequential
// picks give each N/k ± 1.
type RoundRobin struct {
	next atomic.Uint64
}

// maxSchedule bounds one cycle's length; larger weight sums are scaled
// down (the proportions stay within 1 %).
const maxSchedule = 1 << 16

// Prepare implements Strategy: the schedule of one cycle.
func (r *RoundRobin) Prepare(healthy []*Backend) any {
	sum := 0
	for _, b := range healthy {
		sum += b.Weight()
	}
	weights := make([]int, len(healthy))
	total := 0
	for i, b := range healthy {
		weights[i] = b.Weight()
		if sum > maxSchedule {
			weights[i] = max(b.Weight()*maxSchedule/sum, 1)
		}
		total += weights[i]
	}
	// nginx's algorithm: each turn every backend gains its weight, the
	// richest is picked and pays the total.
	current := make([]int, len(healthy))
	schedule := make([]*Backend, 0, total)
	for range total {
		best := 0
		for i := range healthy {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		schedule = append(schedule, healthy[best])
	}
	return schedule
}

// Pick implements Strategy.
func (r *RoundRobin) Pick(_ []*Backend, state any, _ uint64) *Backend {
	schedule := state.([]*Backend)
	n := r.next.Add(1) - 1
	return schedule[n%uint64(len(schedule))]
}
