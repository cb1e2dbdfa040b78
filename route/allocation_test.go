//go:build !race

package route

import "testing"

// Matching allocates nothing, whatever the table's size.
func TestMatchAllocatesNothing(t *testing.T) {
	for _, n := range []int{1, 10, 100} {
		table := benchTable(t, n)
		req := request(t, "GET", "/v1/users/42?page=2", "shop.example.com:8080", "X-Beta", "on")
		if allocs := testing.AllocsPerRun(1000, func() { table.Match(req) }); allocs != 0 {
			t.Errorf("%d routes: %v allocations per match", n, allocs)
		}
	}
}
