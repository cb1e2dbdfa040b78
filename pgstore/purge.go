package pgstore

import (
	"context"
	"time"
)

// purgeLock is the advisory lock that lets one instance at a time purge.
const purgeLock int64 = 0x676f70687075 // "gophpu"

// purgeBatch is how many rows one purge statement deletes: small, so that
// no statement holds many row locks for long.
const purgeBatch = 1000

// Purge deletes rows nobody needs, in small batches, if no other instance
// is purging: automatic buckets full and unused for ttl (they equal a new
// default bucket), and tombstones older than ttl. It returns how many rows
// it deleted.
func (s *Store) Purge(ctx context.Context, ttl time.Duration) (int64, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", purgeLock).Scan(&locked); err != nil || !locked {
		return 0, err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", purgeLock) //nolint:errcheck
	var total int64
	for {
		tag, err := conn.Exec(ctx, `
DELETE FROM token_buckets WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM token_buckets
    WHERE (deleted AND admin_at < now() - $1::interval)
       OR (NOT managed AND NOT deleted AND updated_at < now() - $1::interval
           AND tokens + rate_per_sec * extract(epoch FROM now() - last_refill) >= capacity)
    LIMIT $2))`, ttl, purgeBatch)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch {
			return total, nil
		}
	}
}

// RunPurge purges every period until ctx ends; report gets each failure.
func (s *Store) RunPurge(ctx context.Context, ttl, period time.Duration, report func(error)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := s.Purge(ctx, ttl); err != nil {
				report(err)
			} else if n > 0 {
				s.log.Info().Int64("rows", n).Dur("ttl", ttl).Msg("purged unused bucket rows")
			}
		}
	}
}
