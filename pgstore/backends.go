package pgstore

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// backendsChannel carries "<pool> <url>" of every backend changed through
// the API.
const backendsChannel = "backends"

// BackendRow is a backend change made through the /backends API: the
// backend's pool, weight and state (active, drained, or removed).
type BackendRow struct {
	Pool      string // "" is "default"
	URL       string
	Weight    int
	State     string
	ChangedAt time.Time
}

// SaveBackend stores a change and announces it to every instance, in one
// statement.
func (s *Store) SaveBackend(ctx context.Context, row BackendRow) error {
	if row.Pool == "" {
		row.Pool = "default"
	}
	return s.retryOnce(ctx, func() error {
		var url string
		return s.pool.QueryRow(ctx, `
WITH w AS (
    INSERT INTO backends (pool, url, weight, state, changed_at) VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (pool, url) DO UPDATE SET weight = EXCLUDED.weight, state = EXCLUDED.state, changed_at = now()
    RETURNING pool, url
)
SELECT url FROM w, pg_notify('`+backendsChannel+`', w.pool || ' ' || w.url)`, row.Pool, row.URL, row.Weight, row.State).Scan(&url)
	})
}

// Backends returns every stored change, oldest first.
func (s *Store) Backends(ctx context.Context) ([]BackendRow, error) {
	return s.backendRows(ctx, `SELECT pool, url, weight, state, changed_at FROM backends ORDER BY changed_at`)
}

func (s *Store) backendRows(ctx context.Context, q string, args ...any) ([]BackendRow, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BackendRow
	for rows.Next() {
		var r BackendRow
		if err := rows.Scan(&r.Pool, &r.URL, &r.Weight, &r.State, &r.ChangedAt); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// backendChanged reads the row a notification ("<pool> <url>") names.
func (s *Store) backendChanged(ctx context.Context, payload string) (BackendRow, error) {
	pool, url, ok := strings.Cut(payload, " ")
	if !ok { // from an instance that predates pools
		pool, url = "default", payload
	}
	rows, err := s.backendRows(ctx, `SELECT pool, url, weight, state, changed_at FROM backends WHERE pool = $1 AND url = $2`, pool, url)
	if err != nil {
		return BackendRow{}, err
	}
	if len(rows) == 0 {
		return BackendRow{}, pgx.ErrNoRows
	}
	return rows[0], nil
}

// catchUpBackends hands over the changes made since *since, and moves it on.
func (s *Store) catchUpBackends(ctx context.Context, apply func(BackendRow), since *time.Time) error {
	rows, err := s.backendRows(ctx, `SELECT pool, url, weight, state, changed_at FROM backends WHERE changed_at > $1 ORDER BY changed_at`, since.Add(-time.Second))
	if err != nil {
		return err
	}
	for _, r := range rows {
		apply(r)
		if r.ChangedAt.After(*since) {
			*since = r.ChangedAt
		}
	}
	return nil
}
