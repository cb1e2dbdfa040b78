// Package pgstore keeps buckets in PostgreSQL with pgx: migrations at
// start-up, streaming load, batched upserts for the persister and
// synchronous writes for the admin API. It implements limiter.Store.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"gopher-equalizer/limiter"
	"gopher-equalizer/logthrottle"
)

// batchSize is the most rows one upsert statement carries; bigger sets are
// split so no statement holds locks for long or hits parameter limits.
const batchSize = 10_000

// Store is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	log     zerolog.Logger
	skipped *logthrottle.Logger // rows Sync refuses to send
	// instance names this process in the sync feed, so that it skips
	// its own entries.
	instance string
	// limit is the limit whose buckets this Store reads and writes
	// ("default" for Open's; see ForLimit).
	limit string
	feed  *syncFeed
}

// ForLimit is a Store over the same connections for the buckets of the
// named limit, with a sync feed of its own.
func (s *Store) ForLimit(ctx context.Context, name string) (*Store, error) {
	c := &Store{pool: s.pool, log: s.log, skipped: s.skipped, instance: s.instance, limit: name, feed: &syncFeed{}}
	return c, c.feed.start(ctx, s.pool)
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
	s := &Store{pool: pool, log: log, skipped: logthrottle.New(log, 10*time.Second), instance: newInstanceID(),
		limit: "default", feed: &syncFeed{}}
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
	// The feed starts here: the buckets loaded after this hold every
	// sync before it.
	if err := s.feed.start(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("read the sync feed: %w", err)
	}
	return s, nil
}

// Close closes the connection pool.
func (s *Store) Close() { s.pool.Close() }

// Ping implements limiter.Store.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// LoadInto loads at most max buckets into lim (0: all), most recently used
// first, skipping tombstones. It never deletes rows: rows past max stay
// for the clients that come back.
func (s *Store) LoadInto(ctx context.Context, lim *limiter.Limiter, max int) (int, error) {
	q := `SELECT client_id, capacity, tokens, rate_per_sec, last_refill, managed, version
		FROM token_buckets WHERE NOT deleted AND limit_name = $1`
	args := []any{s.limit}
	if max > 0 {
		q += " ORDER BY managed DESC, updated_at DESC LIMIT $2"
		args = append(args, max)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	var b limiter.Bucket
	for rows.Next() {
		if err := rows.Scan(&b.ClientID, &b.Capacity, &b.Tokens, &b.RatePerSec, &b.LastRefill, &b.Managed, &b.Version); err != nil {
			return n, err
		}
		lim.Restore(b)
		n++
	}
	return n, rows.Err()
}

// notifyChannel carries the client_id of every admin change.
const notifyChannel = "token_buckets"

// adminUpsertSQL writes an admin change: the whole row, a new version, not
// deleted, stamped admin_at, and a notification in the same transaction.
// It answers the version written.
const adminUpsertSQL = `
WITH w AS (
    INSERT INTO token_buckets AS t (limit_name, client_id, capacity, tokens, rate_per_sec, last_refill, managed, version, deleted, admin_at)
    VALUES ($7, $1, $2, $3, $4, $5, $6, 1, false, now())
    ON CONFLICT (limit_name, client_id) DO UPDATE SET
        capacity = EXCLUDED.capacity,
        tokens = EXCLUDED.tokens,
        rate_per_sec = EXCLUDED.rate_per_sec,
        last_refill = EXCLUDED.last_refill,
        managed = EXCLUDED.managed,
        version = t.version + 1,
        deleted = false,
        admin_at = now(),
        updated_at = now()
    RETURNING t.limit_name, t.client_id, t.version
)
SELECT max(version), count(pg_notify('` + notifyChannel + `', limit_name || '/' || client_id)) FROM w`

// Save implements limiter.Store for admin writes; every instance hears of
// the row at once (NOTIFY).
func (s *Store) Save(ctx context.Context, b limiter.Bucket) (int64, error) {
	var version int64
	err := s.retryOnce(ctx, func() error {
		var count int
		return s.pool.QueryRow(ctx, adminUpsertSQL, b.ClientID, b.Capacity, min(b.Tokens, float64(b.Capacity)),
			b.RatePerSec, b.LastRefill, b.Managed, s.limit).Scan(&version, &count)
	})
	return version, err
}

// Delete implements limiter.Store: the row becomes a tombstone (a new
// version, deleted), so no instance's sync brings it back; the purge
// removes tombstones later. It answers the tombstone's version, 0 when
// there was no row.
func (s *Store) Delete(ctx context.Context, clientID string) (int64, error) {
	var version *int64
	err := s.retryOnce(ctx, func() error {
		var count int
		return s.pool.QueryRow(ctx, `
WITH w AS (
    UPDATE token_buckets SET deleted = true, version = version + 1, admin_at = now(), updated_at = now()
    WHERE limit_name = $2 AND client_id = $1 RETURNING limit_name, client_id, version
)
SELECT max(version), count(pg_notify('`+notifyChannel+`', limit_name || '/' || client_id)) FROM w`, clientID, s.limit).Scan(&version, &count)
	})
	if version == nil {
		return 0, err
	}
	return *version, err
}

// retryOnce runs an admin write, and once more if the first attempt met a
// connection that died (a server restart leaves dead connections in the
// pool, and the first use of one reads the server's farewell). The write
// sets absolute state, so running it twice is harmless.
func (s *Store) retryOnce(ctx context.Context, write func() error) error {
	err := write()
	if err != nil && s.resetIfLost(err) && ctx.Err() == nil {
		err = write()
	}
	return err
}

// resetIfLost closes every pooled connection when err says one was lost:
// the others went with the same server restart, and each would fail one
// more write.
func (s *Store) resetIfLost(err error) bool {
	if !connectionLost(err) {
		return false
	}
	s.pool.Reset()
	return true
}

// connectionLost reports whether err says the connection, not the
// statement, failed: never sent, closed under it, or ended by the server
// (class 57P, shutdown and admin termination; class 08, connection
// exceptions).
func connectionLost(err error) bool {
	if pgconn.SafeToRetry(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "57P") || strings.HasPrefix(pgErr.Code, "08"))
}

// reviveSQL brings back to life, as new automatic rows, the tombstones
// that a bucket created since the delete (version 0) spends on: at the
// bucket's level here, with its parameters.
const reviveSQL = `
UPDATE token_buckets AS t SET
    capacity = u.capacity, rate_per_sec = u.rate, managed = false, deleted = false, version = t.version + 1,
    tokens = u.left_tokens, last_refill = now(), updated_at = now()
FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::float8[], $5::bigint[]) AS u(client_id, capacity, rate, left_tokens, version)
WHERE t.limit_name = $6 AND t.client_id = u.client_id AND t.deleted AND u.version = 0`

// syncSQL adds each spend to its row and creates the missing rows. A row's
// new tokens are its tokens refilled to now without the cap, less the
// spend, at most the capacity and, when the spend was made under the row's
// admin version, at most the bucket's level at the sending instance
// (Spend.Left); at least the debt bound (limiter.DebtBound, migration 006).
// Spending made under an older version is added all the same: an admin
// change never discards spending.
//
// ON CONFLICT can only see the proposed row (EXCLUDED), so it carries both
// numbers in a state that is also right for a new row: capacity - spent
// tokens as of ahead seconds ago, which the refill brings to exactly Left
// now. The update reads the spend back as capacity - tokens and Left as
// tokens + rate x (now - last_refill). ahead is negative when Left is below
// capacity - spent (a bucket that started in debt): last_refill is then a
// moment after now(), and the refill arithmetic still gives Left. LEAST
// skips the NULL of a Left that does not apply.
//
// Tombstones are left alone. Only the token state and updated_at change,
// and no index covers them: HOT updates. The rows left below capacity go
// to the sync feed (see Changed) in the same statement.
const syncSQL = `
WITH w AS (
INSERT INTO token_buckets AS t (limit_name, client_id, capacity, tokens, rate_per_sec, last_refill, version)
SELECT $8, u.client_id, u.capacity, u.capacity - u.spent, u.rate, now() - u.ahead * interval '1 second', u.version
FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::float8[], $5::float8[], $6::bigint[])
    AS u(client_id, capacity, rate, spent, ahead, version)
ON CONFLICT (limit_name, client_id) DO UPDATE SET
    tokens = GREATEST(LEAST(t.capacity,
        t.tokens + t.rate_per_sec * date_part('epoch', now() - t.last_refill) - (EXCLUDED.capacity - EXCLUDED.tokens),
        CASE WHEN t.version = EXCLUDED.version
            THEN EXCLUDED.tokens + EXCLUDED.rate_per_sec * date_part('epoch', now() - EXCLUDED.last_refill) END),
        -(8 * t.capacity + t.rate_per_sec)),
    last_refill = now(),
    updated_at = now()
WHERE NOT t.deleted
RETURNING t.client_id, t.capacity, t.tokens + t.rate_per_sec * date_part('epoch', now() - t.last_refill) AS tokens_now,
    t.rate_per_sec, t.managed, t.version, t.deleted
), feed AS (
    INSERT INTO token_bucket_syncs (instance, limit_name, client_ids, tokens, versions)
    SELECT $7, $8, array_agg(client_id), array_agg(tokens_now), array_agg(version)
    FROM w WHERE tokens_now < capacity AND NOT deleted HAVING count(*) > 0
)
SELECT * FROM w`

// scanSynced appends the rows of a sync answer to dst.
func scanSynced(rows pgx.Rows, dst []limiter.Bucket) ([]limiter.Bucket, error) {
	defer rows.Close()
	now := time.Now()
	for rows.Next() {
		b := limiter.Bucket{LastRefill: now}
		if err := rows.Scan(&b.ClientID, &b.Capacity, &b.Tokens, &b.RatePerSec, &b.Managed, &b.Version, &b.Deleted); err != nil {
			return dst, err
		}
		dst = append(dst, b)
	}
	return dst, rows.Err()
}

// stateSQL reads rows as they are now, tokens refilled to now.
const stateSQL = `
SELECT client_id, capacity,
       GREATEST(LEAST(capacity, tokens + rate_per_sec * date_part('epoch', now() - last_refill)), -(8 * capacity + rate_per_sec)),
       rate_per_sec, managed, version, deleted
FROM token_buckets WHERE limit_name = $2 AND client_id = ANY($1)`

// Sync implements limiter.Store: one statement adds the spending of up to
// batchSize buckets, a second reads back their state, in one transaction.
func (s *Store) Sync(ctx context.Context, spends []limiter.Spend) ([]limiter.Bucket, error) {
	// Every instance locks rows in key order, so that two batches that
	// share keys wait for each other instead of deadlocking.
	spends = s.validSpends(spends)
	slices.SortFunc(spends, func(a, b limiter.Spend) int { return strings.Compare(a.ClientID, b.ClientID) })
	out := make([]limiter.Bucket, 0, len(spends))
	for start := 0; start < len(spends); start += batchSize {
		batch := spends[start:min(start+batchSize, len(spends))]
		n := len(batch)
		ids := make([]string, n)
		caps := make([]int64, n)
		rates := make([]float64, n)
		spent := make([]float64, n)
		ahead := make([]float64, n)
		lefts := make([]float64, n)
		versions := make([]int64, n)
		for i, sp := range batch {
			c, debt := float64(sp.Capacity), limiter.DebtBound(sp.Capacity, sp.RatePerSec)
			// A new row may start at most at the debt bound.
			ids[i], caps[i], rates[i], versions[i] = sp.ClientID, sp.Capacity, sp.RatePerSec, sp.Version
			spent[i] = min(sp.Spent, c+debt)
			lefts[i] = max(min(sp.Left, c), -debt)
			ahead[i] = (lefts[i] - (c - spent[i])) / sp.RatePerSec
		}
		var got []limiter.Bucket
		err := s.retryConflict(ctx, func() error {
			got = got[:0]
			return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				// The common case is one statement: the upsert returns the
				// rows it wrote, as they are now.
				rows, err := tx.Query(ctx, syncSQL, ids, caps, rates, spent, ahead, versions, s.instance, s.limit)
				if err != nil {
					return err
				}
				if got, err = scanSynced(rows, got); err != nil {
					return err
				}
				if len(got) == n {
					return nil
				}
				// Rows it did not write: tombstones (revived for a new
				// bucket) and rows under another admin version.
				written := make(map[string]bool, len(got))
				for _, b := range got {
					written[b.ClientID] = true
				}
				var mIDs []string
				var mCaps, mVersions []int64
				var mRates, mLefts []float64
				for k, id := range ids {
					if !written[id] {
						mIDs, mCaps, mRates = append(mIDs, id), append(mCaps, caps[k]), append(mRates, rates[k])
						mLefts, mVersions = append(mLefts, lefts[k]), append(mVersions, versions[k])
					}
				}
				if _, err := tx.Exec(ctx, reviveSQL, mIDs, mCaps, mRates, mLefts, mVersions, s.limit); err != nil {
					return err
				}
				rows, err = tx.Query(ctx, stateSQL, mIDs, s.limit)
				if err != nil {
					return err
				}
				got, err = scanSynced(rows, got)
				return err
			})
		})
		if err != nil {
			s.resetIfLost(err)
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// validSpends returns a sorted-ready copy of spends without the rows
// PostgreSQL would refuse (a key that is not UTF-8 or holds a NUL byte, one
// out of the table's length bounds, a spend that is not a finite
// non-negative number): one such row would fail its whole batch, every
// interval, and nothing would be persisted any more. A skipped row stays
// in memory only, and is logged (throttled).
func (s *Store) validSpends(spends []limiter.Spend) []limiter.Spend {
	out := make([]limiter.Spend, 0, len(spends))
	for _, sp := range spends {
		if reason := invalidSpend(sp); reason != "" {
			s.skipped.Event().Str("client_id", strconv.QuoteToASCII(sp.ClientID)).Str("reason", reason).
				Msg("bucket not persisted: PostgreSQL would refuse its row")
			continue
		}
		out = append(out, sp)
	}
	return out
}

// maxClientIDLen is the table's bound on client_id, in bytes.
const maxClientIDLen = 256

func invalidSpend(sp limiter.Spend) string {
	switch {
	case len(sp.ClientID) == 0 || len(sp.ClientID) > maxClientIDLen:
		return "client_id must be 1 to 256 bytes"
	case !utf8.ValidString(sp.ClientID):
		return "client_id is not valid UTF-8"
	case strings.IndexByte(sp.ClientID, 0) >= 0:
		return "client_id holds a NUL byte"
	case math.IsNaN(sp.Spent) || math.IsInf(sp.Spent, 0) || sp.Spent < 0:
		return "spent is not a finite non-negative number"
	case math.IsNaN(sp.Left) || math.IsInf(sp.Left, 0):
		return "left is not a finite number"
	case sp.Capacity <= 0 || !(sp.RatePerSec > 0) || math.IsInf(sp.RatePerSec, 0):
		return "capacity or rate is not positive"
	}
	return ""
}

// retryConflict runs a transaction again, up to three times, when
// PostgreSQL aborted it for a deadlock or a serialization failure: the
// next attempt usually goes through at once, and the sync must not wait
// for its backoff.
func (s *Store) retryConflict(ctx context.Context, tx func() error) error {
	var err error
	for range 3 {
		if err = tx(); err == nil || ctx.Err() != nil {
			return err
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			return err
		}
	}
	return err
}

// SetDefaults moves the rows of automatic buckets that have the old default
// capacity and rate to the new ones (a configuration reload), keeping
// their tokens, cut to the new capacity. Admin buckets keep their own.
func (s *Store) SetDefaults(ctx context.Context, old, now limiter.Defaults) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
UPDATE token_buckets SET capacity = $1, rate_per_sec = $2, tokens = GREATEST(LEAST(tokens, $1), -(8 * $1 + $2)), updated_at = now()
WHERE NOT managed AND NOT deleted AND capacity = $3 AND rate_per_sec = $4 AND limit_name = $5`,
		now.Capacity, now.RatePerSec, old.Capacity, old.RatePerSec, s.limit)
	return tag.RowsAffected(), err
}
