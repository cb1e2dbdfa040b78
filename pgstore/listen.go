package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"gopher-equalizer/limiter"
)

// Listener applies every admin change, made on any instance, to a
// limiter (bucket changes) and through onBackend (backend changes, nil:
// ignored). It LISTENs on a connection of its own and reads the changed
// row back for each notification. After a reconnect it re-reads the rows
// changed since the last change it saw, so a change made while it was
// away still arrives; rows the limiter already holds change nothing.
type Listener struct {
	s *Store
	// lim finds the limiter of a limit by name; nil: a limit this
	// configuration does not have (its changes are ignored).
	lim       func(limit string) *limiter.Limiter
	onBackend func(BackendRow)
	conn      *pgx.Conn
	// since and backendsSince: the newest admin_at / changed_at seen, in
	// the database's clock.
	since, backendsSince time.Time
}

// Listen starts listening. Call it before loading the buckets: a change
// committed after it returns is notified, one before it is in the load.
func (s *Store) Listen(ctx context.Context, lim func(limit string) *limiter.Limiter, onBackend func(BackendRow)) (*Listener, error) {
	l := &Listener{s: s, lim: lim, onBackend: onBackend}
	conn, now, err := l.connect(ctx)
	if err != nil {
		return nil, err
	}
	l.conn, l.since, l.backendsSince = conn, now, now
	return l, nil
}

// Run applies notifications until ctx ends, reconnecting after a failure
// (report gets each one) and catching up on what it missed.
func (l *Listener) Run(ctx context.Context, report func(error)) {
	for ctx.Err() == nil {
		err := l.serve(ctx)
		if l.conn != nil {
			l.conn.Close(context.Background()) //nolint:errcheck
			l.conn = nil
		}
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

// Close closes the connection of a Listener that never ran.
func (l *Listener) Close() {
	if l.conn != nil {
		l.conn.Close(context.Background()) //nolint:errcheck
		l.conn = nil
	}
}

// connect takes a connection of its own and LISTENs on it; it answers the
// database's time once listening.
func (l *Listener) connect(ctx context.Context) (*pgx.Conn, time.Time, error) {
	pooled, err := l.s.pool.Acquire(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	conn := pooled.Hijack() // the connection is this listener's until it fails
	var now time.Time
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel+"; LISTEN "+backendsChannel); err != nil {
		conn.Close(context.Background()) //nolint:errcheck
		return nil, now, err
	}
	if err := conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		conn.Close(context.Background()) //nolint:errcheck
		return nil, now, err
	}
	return conn, now, nil
}

// serve reconnects and catches up when it has no connection, then applies
// notifications until the connection fails.
func (l *Listener) serve(ctx context.Context) error {
	if l.conn == nil {
		conn, _, err := l.connect(ctx)
		if err != nil {
			return err
		}
		l.conn = conn
		if err := l.s.catchUp(ctx, l.lim, &l.since); err != nil {
			return err
		}
		if l.onBackend != nil {
			if err := l.s.catchUpBackends(ctx, l.onBackend, &l.backendsSince); err != nil {
				return err
			}
		}
	}
	for {
		n, err := l.conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == backendsChannel {
			if l.onBackend == nil {
				continue
			}
			row, err := l.s.backendChanged(ctx, n.Payload)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if err == nil {
				l.onBackend(row)
				if row.ChangedAt.After(l.backendsSince) {
					l.backendsSince = row.ChangedAt
				}
			}
			continue
		}
		limit, clientID, ok := strings.Cut(n.Payload, "/")
		if !ok { // from an instance that predates limits
			limit, clientID = "default", n.Payload
		}
		row, err := l.s.stateOf(ctx, limit, clientID)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // purged meanwhile
		}
		if err != nil {
			return err
		}
		if lim := l.lim(limit); lim != nil {
			if err := lim.ApplyRemote(ctx, row.Bucket); err != nil {
				return err
			}
		}
		if row.adminAt.After(l.since) {
			l.since = row.adminAt
		}
	}
}

// catchUp applies the rows an admin changed since *since (with a second of
// margin for clock steps between transactions) and moves *since on.
func (s *Store) catchUp(ctx context.Context, lim func(string) *limiter.Limiter, since *time.Time) error {
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
		if l := lim(row.limit); l != nil {
			if err := l.ApplyRemote(ctx, row.Bucket); err != nil {
				return err
			}
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
       GREATEST(LEAST(capacity, tokens + rate_per_sec * date_part('epoch', now() - last_refill)), -(8 * capacity + rate_per_sec)),
       rate_per_sec, managed, version, deleted, admin_at, limit_name
FROM token_buckets`

type stateRow struct {
	limiter.Bucket
	adminAt time.Time
	limit   string
}

func scanStates(rows pgx.Rows) ([]stateRow, error) {
	defer rows.Close()
	var out []stateRow
	now := time.Now()
	for rows.Next() {
		r := stateRow{Bucket: limiter.Bucket{LastRefill: now}}
		if err := rows.Scan(&r.ClientID, &r.Capacity, &r.Tokens, &r.RatePerSec, &r.Managed, &r.Version, &r.Deleted, &r.adminAt, &r.limit); err != nil {
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
	return row.Bucket, err == nil, err
}

// state reads one row of s's limit as it is now.
func (s *Store) state(ctx context.Context, clientID string) (stateRow, error) {
	return s.stateOf(ctx, s.limit, clientID)
}

// stateOf reads one row of a limit as it is now.
func (s *Store) stateOf(ctx context.Context, limit, clientID string) (stateRow, error) {
	rows, err := s.pool.Query(ctx, stateColumns+` WHERE limit_name = $1 AND client_id = $2`, limit, clientID)
	if err != nil {
		return stateRow{}, err
	}
	got, err := scanStates(rows)
	if err != nil {
		return stateRow{}, err
	}
	if len(got) == 0 {
		return stateRow{}, pgx.ErrNoRows
	}
	return got[0], nil
}
