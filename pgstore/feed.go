package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"gopher-equalizer/limiter"
)

// syncFeed reads token_bucket_syncs: the rows the other instances' syncs
// left below capacity since the last read. Entries are read by sequence
// number.
// A sequence number is taken when a sync's transaction writes, and the
// transaction may commit after a later one, so the feed keeps a floor
// below which everything was read and the numbers above it already read;
// a gap that stays open gapTimeout (a rolled-back sync) is given up.
type syncFeed struct {
	mu    sync.Mutex
	floor int64
	seen  map[int64]time.Time // above floor, read, and when
	reads int
}

const (
	gapTimeout = 10 * time.Second
	// feedKeep is how long entries stay; readers delete older ones every
	// pruneEvery reads. An instance away longer misses them: its buckets
	// catch up when they next sync.
	feedKeep   = time.Minute
	pruneEvery = 256
)

func (f *syncFeed) start(ctx context.Context, pool *pgxpool.Pool) error {
	f.seen = map[int64]time.Time{}
	return pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM token_bucket_syncs`).Scan(&f.floor)
}

func newInstanceID() string {
	b := make([]byte, 8)
	rand.Read(b) //nolint:errcheck // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// Changed implements limiter.Store: the rows other instances' syncs left
// below capacity since the last call, each as that sync wrote it (tokens
// as of LastRefill, in this process's clock; capacity and rate unset), in
// the order of the syncs.
func (s *Store) Changed(ctx context.Context) ([]limiter.Bucket, error) {
	f := s.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	read := make([]int64, 0, len(f.seen))
	for seq := range f.seen {
		read = append(read, seq)
	}
	rows, err := s.pool.Query(ctx, `
SELECT seq, instance = $3 OR limit_name <> $4, client_ids, tokens, versions, date_part('epoch', now() - at)
FROM token_bucket_syncs WHERE seq > $1 AND seq <> ALL($2) ORDER BY seq`, f.floor, read, s.instance, s.limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []limiter.Bucket
	now := time.Now()
	for rows.Next() {
		var seq int64
		var own bool
		var ids []string
		var tokens []float64
		var versions []int64
		var age float64
		if err := rows.Scan(&seq, &own, &ids, &tokens, &versions, &age); err != nil {
			return nil, err
		}
		f.seen[seq] = now
		if own || len(tokens) != len(ids) || len(versions) != len(ids) {
			continue
		}
		at := now.Add(-time.Duration(age * float64(time.Second)))
		for i, id := range ids {
			out = append(out, limiter.Bucket{ClientID: id, Tokens: tokens[i], Version: versions[i], LastRefill: at})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	f.advance(now)
	if f.reads++; f.reads%pruneEvery == 0 {
		if _, err := s.pool.Exec(ctx, `DELETE FROM token_bucket_syncs WHERE at < now() - $1::interval`, feedKeep); err != nil {
			return out, err
		}
	}
	return out, nil
}

// advance moves the floor over the numbers read without a gap, and over a
// gap older than gapTimeout.
func (f *syncFeed) advance(now time.Time) {
	for {
		for {
			if _, ok := f.seen[f.floor+1]; !ok {
				break
			}
			delete(f.seen, f.floor+1)
			f.floor++
		}
		if len(f.seen) == 0 {
			return
		}
		lowest, oldest := int64(-1), now
		for seq, at := range f.seen {
			if lowest < 0 || seq < lowest {
				lowest = seq
			}
			if at.Before(oldest) {
				oldest = at
			}
		}
		if now.Sub(oldest) < gapTimeout {
			return
		}
		f.floor = lowest - 1
	}
}
