package limiter

import (
	"context"
	"sync"
	"time"
)

// MemoryStore keeps the saved rows in a map. It is the store when no database
// is configured: admin writes go through it as they would to PostgreSQL
// (the persister does not run then, so automatic buckets are not copied),
// and nothing survives a restart. Tests use it to watch what is saved.
type MemoryStore struct {
	mu    sync.Mutex
	rows  map[string]Bucket
	clock func() time.Time // time.Now; tests that drive time set their own
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{rows: map[string]Bucket{}, clock: time.Now}
}

// Save implements Store.
func (m *MemoryStore) Save(_ context.Context, b Bucket) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b.Version = m.rows[b.ClientID].Version + 1
	b.Deleted = false
	m.rows[b.ClientID] = b
	return b.Version, nil
}

// Delete implements Store. Nothing else shares a memory store, so the
// row goes at once instead of staying as a tombstone.
func (m *MemoryStore) Delete(_ context.Context, id string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.rows[id].Version + 1
	delete(m.rows, id)
	return v, nil
}

// Sync implements Store as pgstore does: each row refilled to now
// (uncapped) less the spending, at most the capacity and, under the same
// admin version, the spend's Left; a missing row is created at Left with
// the spend's parameters.
func (m *MemoryStore) Sync(_ context.Context, spends []Spend) ([]Bucket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock()
	out := make([]Bucket, 0, len(spends))
	for _, s := range spends {
		row, ok := m.rows[s.ClientID]
		switch {
		case !ok:
			row = Bucket{ClientID: s.ClientID, Capacity: s.Capacity, RatePerSec: s.RatePerSec,
				Tokens: max(min(s.Left, float64(s.Capacity)), -DebtBound(s.Capacity, s.RatePerSec))}
		case row.Deleted:
		default:
			tokens := uncapped(row, now) - s.Spent
			if row.Version == s.Version {
				tokens = min(tokens, s.Left)
			}
			row.Tokens = max(min(float64(row.Capacity), tokens), -DebtBound(row.Capacity, row.RatePerSec))
		}
		row.LastRefill = now
		m.rows[s.ClientID] = row
		out = append(out, row)
	}
	return out, nil
}

// Changed implements Store: nothing else writes to a memory store.
func (m *MemoryStore) Changed(context.Context) ([]Bucket, error) { return nil, nil }

// refilled is a row's tokens refilled to now, at most its capacity.
func refilled(b Bucket, now time.Time) float64 { return min(float64(b.Capacity), uncapped(b, now)) }

// uncapped is a row's tokens plus its refill since LastRefill.
func uncapped(b Bucket, now time.Time) float64 {
	return b.Tokens + b.RatePerSec*now.Sub(b.LastRefill).Seconds()
}

// Load implements Store.
func (m *MemoryStore) Load(_ context.Context, id string) (Bucket, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.rows[id]
	if !ok || b.Deleted {
		return Bucket{}, false, nil
	}
	b.Tokens = refilled(b, m.clock())
	b.LastRefill = m.clock()
	return b, true, nil
}

// Ping implements Store.
func (m *MemoryStore) Ping(context.Context) error { return nil }

// Row returns the saved row of id.
func (m *MemoryStore) Row(id string) (Bucket, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.rows[id]
	return b, ok
}

// Len is the number of saved rows.
func (m *MemoryStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rows)
}
