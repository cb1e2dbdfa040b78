package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"gopher-equalizer/limiter"
)

// Listen applies every admin change, made on any instance, until ctx ends:
// bucket changes to lim, backend changes through onBackend (nil: ignored).
// It LISTENs on a connection of its own and reads the changed row back for
// each notification. After a (re)connect it re-reads the rows changed since
// the last change it saw, so a change made while it was away still
// arrives. report gets each connection failure.
func (s *Store) Listen(ctx context.Context, lim *limiter.Limiter, onBackend func(BackendRow), report func(error)) {
	since := time.Now().Add(-time.Second) // start-up loaded everything older
	backendsSince := since
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, lim, onBackend, &since, &backendsSince)
		if ctx.Err() != nil {
			return
		}
		report(fmt.Errorf("listening for admin changes: %w", err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, lim *limiter.Limiter, onBackend func(BackendRow), since, backendsSince *time.Time) error {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pooled.Hijack() // the connection is this loop's until it fails
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel+"; LISTEN "+backendsChannel); err != nil {
		return err
	}
	if err := s.catchUp(ctx, lim, since); err != nil {
		return err
	}
	if onBackend != nil {
		if err := s.catchUpBackends(ctx, onBackend, backendsSince); err != nil {
			return err
		}
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == backendsChannel {
			if onBackend == nil {
				continue
			}
			row, err := s.backendChanged(ctx, n.Payload)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if err == nil {
				onBackend(row)
				if row.ChangedAt.After(*backendsSince) {
					*backendsSince = row.ChangedAt
				}
			}
			continue
		}
		row, err := s.state(ctx, n.Payload)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // purged meanwhile
		}
		if err != nil {
			return err
		}
		if err := lim.ApplyRemote(ctx, row); err != nil {
			return err
		}
	}
}

// catchUp applies the rows an admin changed since *since (with a second of
// margin for clock steps between transactions) and moves *since on.
func (s *Store) catchUp(ctx context.Context, lim *limiter.Limiter, since *time.Time) error {
	// version > 0: rows an admin changed (automatic rows are stamped at insert).
	rows, err := s.pool.Query(ctx, stateColumns+` WHERE admin_at > $1 AND version > 0 ORDER BY admin_at`, since.Add(-time.Second))
	if err != nil {
		return err
	}
	changed, err := scanStates(rows)
	if err != nil {
		return err
	}
	for _, row := range changed {
		if err := lim.ApplyRemote(ctx, row.Bucket); err != nil {
			return err
		}
		if row.adminAt.After(*since) {
			*since = row.adminAt
		}
	}
	return nil
}

// stateColumns selects a row as it is now: tokens refilled to now.
const stateColumns = `
SELECT client_id, capacity,
       GREATEST(LEAST(capacity, tokens + rate_per_sec * extract(epoch FROM now() - last_refill)), -(capacity + rate_per_sec)),
       rate_per_sec, managed, version, deleted, admin_at
FROM token_buckets`

type stateRow struct {
	limiter.Bucket
	adminAt time.Time
}

func scanStates(rows pgx.Rows) ([]stateRow, error) {
	defer rows.Close()
	var out []stateRow
	now := time.Now()
	for rows.Next() {
		r := stateRow{Bucket: limiter.Bucket{LastRefill: now}}
		if err := rows.Scan(&r.ClientID, &r.Capacity, &r.Tokens, &r.RatePerSec, &r.Managed, &r.Version, &r.Deleted, &r.adminAt); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Load implements limiter.Store: one row as it is now.
func (s *Store) Load(ctx context.Context, clientID string) (limiter.Bucket, bool, error) {
	row, err := s.state(ctx, clientID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && row.Deleted) {
		return limiter.Bucket{}, false, nil
	}
	return row, err == nil, err
}

// state reads one row as it is now.
func (s *Store) state(ctx context.Context, clientID string) (limiter.Bucket, error) {
	rows, err := s.pool.Query(ctx, stateColumns+` WHERE client_id = $1`, clientID)
	if err != nil {
		return limiter.Bucket{}, err
	}
	got, err := scanStates(rows)
	if err != nil {
		return limiter.Bucket{}, err
	}
	if len(got) == 0 {
		return limiter.Bucket{}, pgx.ErrNoRows
	}
	return got[0].Bucket, nil
}
