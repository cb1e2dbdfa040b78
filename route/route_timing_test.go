package route

import (
	"fmt"
	"testing"
)

// table of n routes of the usual shapes; the request matches the last.
func benchTable(b testing.TB, n int) *Table {
	specs := make([]Spec, 0, n)
	for i := range n - 1 {
		switch i % 3 {
		case 0:
			specs = append(specs, Spec{Name: fmt.Sprint("p", i), Match: MatchSpec{PathPrefix: fmt.Sprintf("/svc%d/", i)}})
		case 1:
			specs = append(specs, Spec{Name: fmt.Sprint("h", i), Match: MatchSpec{Host: fmt.Sprintf("h%d.example.com", i), Methods: []string{"GET", "POST"}}})
		default:
			specs = append(specs, Spec{Name: fmt.Sprint("w", i), Match: MatchSpec{Host: fmt.Sprintf("*.t%d.example.com", i), PathPrefix: "/api/"}})
		}
	}
	specs = append(specs, Spec{Name: "last", Match: MatchSpec{Host: "shop.example.com", PathPrefix: "/v1/"}})
	t, _, err := Compile(specs, pools(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("%d routes", n), func(b *testing.B) {
			t := benchTable(b, n)
			req := request(b, "GET", "/v1/users/42?page=2", "shop.example.com:8080", "User-Agent", "bench", "Accept", "*/*")
			b.ReportAllocs()
			for b.Loop() {
				if t.Match(req) == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}
