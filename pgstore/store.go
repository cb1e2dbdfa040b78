// Package pgstore keeps buckets in PostgreSQL with pgx: migrations at
// start-up, streaming load, batched upserts for the persister and
// synchronous writes for the admin API. It implements limiter.Store.
package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"gopher-equalizer/limiter"
)

// batchSize is the most rows one upsert statement carries; bigger sets are
// split so no statement holds locks for long or hits parameter limits.
const batchSize = 10_000

// Store is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	log  zerolog.Logger
}

// Open connects, retrying until ctx is done, and applies migrations. An
// unreachable database ends in an error that says how long it tried.
func Open(ctx context.Context, url string, log zerolog.Logger) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("not a valid PostgreSQL URL: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	cfg.MaxConns = max(cfg.MaxConns, 4)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{pool: pool, log: log}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err = pool.Ping(ctx)
		if err == nil {
			break
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn().Err(err).Int("attempt", attempt).Msg("PostgreSQL not reachable yet; retrying")
		}
		select {
		case <-ctx.Done():
			pool.Close()
			return nil, fmt.Errorf("PostgreSQL unreachable after %s: %w", time.Since(start).Round(time.Second), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err := s.Migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return s, nil
}

// Close closes the connection pool.
func (s *Store) Close() { s.pool.Close() }

// Ping implements limiter.Store.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// LoadInto streams every bucket into lim and returns how many it loaded.
func (s *Store) LoadInto(ctx context.Context, lim *limiter.Limiter) (int, error) {
	rows, err := s.pool.Query(ctx,
		"SELECT client_id, capacity, tokens, rate_per_sec, last_refill, managed FROM token_buckets")
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	var b limiter.Bucket
	for rows.Next() {
		if err := rows.Scan(&b.ClientID, &b.Capacity, &b.Tokens, &b.RatePerSec, &b.LastRefill, &b.Managed); err != nil {
			return n, err
		}
		lim.Restore(b)
		n++
	}
	return n, rows.Err()
}

const upsertSQL = `
INSERT INTO token_buckets AS t (client_id, capacity, tokens, rate_per_sec, last_refill, managed)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::float8[], $5::timestamptz[], $6::boolean[])
ON CONFLICT (client_id) DO UPDATE SET
    capacity = EXCLUDED.capacity,
    tokens = EXCLUDED.tokens,
    rate_per_sec = EXCLUDED.rate_per_sec,
    last_refill = EXCLUDED.last_refill,
    managed = EXCLUDED.managed,
    updated_at = now()`

// Save implements limiter.Store: an upsert of whole rows, one statement per
// batchSize rows, all in one transaction.
func (s *Store) Save(ctx context.Context, buckets []limiter.Bucket) error {
	if len(buckets) == 0 {
		return nil
	}
	if len(buckets) <= batchSize {
		return s.saveBatch(ctx, s.pool, buckets)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for start := 0; start < len(buckets); start += batchSize {
			if err := s.saveBatch(ctx, tx, buckets[start:min(start+batchSize, len(buckets))]); err != nil {
				return err
			}
		}
		return nil
	})
}

// execer is what saveBatch needs from a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func (s *Store) saveBatch(ctx context.Context, db execer, buckets []limiter.Bucket) error {
	n := len(buckets)
	ids := make([]string, n)
	capacities := make([]int64, n)
	tokens := make([]float64, n)
	rates := make([]float64, n)
	refills := make([]time.Time, n)
	managed := make([]bool, n)
	for i, b := range buckets {
		ids[i], capacities[i], tokens[i], rates[i], refills[i], managed[i] =
			b.ClientID, b.Capacity, min(b.Tokens, float64(b.Capacity)), b.RatePerSec, b.LastRefill, b.Managed
	}
	_, err := db.Exec(ctx, upsertSQL, ids, capacities, tokens, rates, refills, managed)
	return err
}

// Delete implements limiter.Store.
func (s *Store) Delete(ctx context.Context, clientIDs []string) error {
	if len(clientIDs) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, "DELETE FROM token_buckets WHERE client_id = ANY($1)", clientIDs)
	return err
}
