package admin

import (
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzNewBucket feeds arbitrary bodies to the POST validation: it must never
// panic, and whatever it accepts must satisfy the contract.
func FuzzNewBucket(f *testing.F) {
	for _, seed := range []string{
		`{"client_id":"10.0.0.1","capacity":50,"tokens":10,"rate_per_sec":5}`,
		`{"client_id":"a","capacity":1}`, `{"client_id":"a","capacity":1.5}`, `[1]`, `null`, ``,
		`{"client_id":"\u0000","capacity":1}`, `{"client_id":"a","capacity":1,"x":1}`,
	} {
		f.Add([]byte(seed))
	}
	a := &API{cfg: Config{RatePerSec: 100}}
	a.now = time.Now
	f.Fuzz(func(t *testing.T, data []byte) {
		body, err := decodeBody(data)
		if err != nil {
			return
		}
		row, err := a.newBucket(body, a.cfg.RatePerSec)
		if err != nil {
			return
		}
		if len(row.ClientID) == 0 || len(row.ClientID) > maxClientIDLen || !utf8.ValidString(row.ClientID) ||
			checkClientID(row.ClientID) != nil {
			t.Fatalf("accepted client_id %q", row.ClientID)
		}
		if row.Capacity < 1 || row.Capacity > maxCapacity || row.Tokens < 0 || row.Tokens > float64(row.Capacity) {
			t.Fatalf("accepted %+v", row)
		}
		if row.RatePerSec < minRatePerSec || float64(row.Capacity)/row.RatePerSec > 1e9 {
			t.Fatalf("accepted rate %v with capacity %d", row.RatePerSec, row.Capacity)
		}
	})
}
