package pgstore

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gopher-equalizer/limiter"
	"gopher-equalizer/migrations"
	"gopher-equalizer/pgstore/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

func open(t testing.TB, url string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, url, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestMigrationsOnEmptyDatabaseTwiceAndAtOnce(t *testing.T) {
	c := pgtest.Require(t)
	url := c.NewDatabase(t)
	// Several instances starting at once against a fresh database.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := Open(ctx, url, zerolog.Nop())
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent start: %v", err)
	}
	s := open(t, url) // and once more on a migrated database
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, _ := fs.Glob(migrations.FS, "*.sql")
	var versions int
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM schema_migrations").Scan(&versions); err != nil || versions != len(files) {
		t.Fatalf("schema_migrations has %d rows (%v), want one per file: %d", versions, err, len(files))
	}
}

func TestConstraintsRejectBadRows(t *testing.T) {
	c := pgtest.Require(t)
	s := open(t, c.NewDatabase(t))
	ctx := context.Background()
	insert := `INSERT INTO token_buckets (client_id, capacity, tokens, rate_per_sec, last_refill) VALUES ($1, $2, $3, $4, now())`
	if _, err := s.pool.Exec(ctx, insert, "ok", 10, 10.0, 1.0); err != nil {
		t.Fatalf("a good row was refused: %v", err)
	}
	for _, bad := range []struct {
		id         string
		capacity   int64
		tokens     float64
		rate       float64
		constraint string
	}{
		{"a", 0, 0, 1, "token_buckets_capacity_positive"},
		{"b", -1, 0, 1, "token_buckets_capacity_positive"},
		{"c", 10, -81.5, 1, "token_buckets_tokens_bounded_debt"}, // past 8 capacities and one second of refill
		{"d", 10, 11, 1, "token_buckets_tokens_within_capacity"},
		{"e", 10, 5, 0, "token_buckets_rate_positive"},
		{"", 10, 5, 1, "token_buckets_client_id_length"},
		{strings.Repeat("x", 257), 10, 5, 1, "token_buckets_client_id_length"},
		{"ok", 10, 5, 1, "token_buckets_pkey"},
	} {
		_, err := s.pool.Exec(ctx, insert, bad.id, bad.capacity, bad.tokens, bad.rate)
		if err == nil || !strings.Contains(err.Error(), bad.constraint) {
			t.Errorf("%+v: got %v, want a violation of %s", bad, err, bad.constraint)
		}
	}
}

func TestSaveLoadAndTrigger(t *testing.T) {
	c := pgtest.Require(t)
	s := open(t, c.NewDatabase(t))
	ctx := context.Background()
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	if _, err := s.pool.Exec(ctx, `INSERT INTO token_buckets (client_id, capacity, tokens, rate_per_sec, last_refill)
		SELECT 'c' || lpad(g::text, 6, '0'), 10, 2.5, 1, $1 FROM generate_series(0, $2) g`, at, batchSize+4); err != nil {
		t.Fatal(err)
	}
	var first time.Time
	s.pool.QueryRow(ctx, "SELECT updated_at FROM token_buckets WHERE client_id = 'c000001'").Scan(&first) //nolint:errcheck
	// Change one, add one: an upsert.
	changed := []limiter.Bucket{
		{ClientID: "c000001", Capacity: 20, Tokens: 7, RatePerSec: 2, LastRefill: at.Add(time.Second), Managed: true},
		{ClientID: "new", Capacity: 3, Tokens: 0, RatePerSec: 0.5, LastRefill: at},
	}
	for i, b := range changed {
		if v, err := s.Save(ctx, b); err != nil || v != int64(1) {
			t.Fatalf("save %d: version %d, %v", i, v, err)
		}
	}
	var capacity int64
	var tokens float64
	var managed bool
	var updated time.Time
	err := s.pool.QueryRow(ctx, "SELECT capacity, tokens, managed, updated_at FROM token_buckets WHERE client_id = 'c000001'").Scan(&capacity, &tokens, &managed, &updated)
	if err != nil || capacity != 20 || tokens != 7 || !managed {
		t.Fatalf("upserted row: %d %v %v %v", capacity, tokens, managed, err)
	}
	if !updated.After(first) {
		t.Errorf("the upsert did not move updated_at: %v then %v", first, updated)
	}
	// Any other writer gets updated_at stamped by the trigger.
	if _, err := s.pool.Exec(ctx, "UPDATE token_buckets SET tokens = 7 WHERE client_id = 'c000001'"); err != nil {
		t.Fatal(err)
	}
	var stamped time.Time
	s.pool.QueryRow(ctx, "SELECT updated_at FROM token_buckets WHERE client_id = 'c000001'").Scan(&stamped) //nolint:errcheck
	if !stamped.After(updated) {
		t.Errorf("trigger did not stamp updated_at on a plain UPDATE: %v then %v", updated, stamped)
	}

	lim := limiter.New(limiter.Config{Capacity: 100, RatePerSec: 100}, s)
	n, err := s.LoadInto(ctx, lim, 0)
	if err != nil || n != batchSize+6 || lim.Len() != n {
		t.Fatalf("loaded %d (%v), limiter has %d", n, err, lim.Len())
	}
	b, ok := lim.Get("c000001", at.Add(time.Second).UnixNano())
	if !ok || b.Capacity != 20 || b.Tokens != 7 || !b.Managed || b.RatePerSec != 2 {
		t.Fatalf("loaded bucket %+v", b)
	}
	// Refill for the time since last_refill is applied on load.
	if b, _ := lim.Get("c000002", at.Add(3*time.Second).UnixNano()); b.Tokens != 5.5 {
		t.Fatalf("refill after load: %+v", b)
	}

	for _, id := range []string{"new", "c000001", "missing"} {
		if _, err := s.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// A delete leaves tombstones, which loading skips.
	var left, tombstones int
	s.pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted) FROM token_buckets").Scan(&left, &tombstones) //nolint:errcheck
	if left != batchSize+4 || tombstones != 2 {
		t.Fatalf("%d rows and %d tombstones after delete", left, tombstones)
	}
	lim = limiter.New(limiter.Config{Capacity: 100, RatePerSec: 100}, s)
	if n, err := s.LoadInto(ctx, lim, 0); err != nil || n != batchSize+4 {
		t.Fatalf("loaded %d (%v) after delete", n, err)
	}
	if n, _ := s.LoadInto(ctx, limiter.New(limiter.Config{Capacity: 100, RatePerSec: 100}, s), 100); n != 100 {
		t.Fatalf("a bounded load took %d rows, want 100", n)
	}
}

func TestFlushThroughStore(t *testing.T) {
	c := pgtest.Require(t)
	s := open(t, c.NewDatabase(t))
	ctx := context.Background()
	lim := limiter.New(limiter.Config{Capacity: 5, RatePerSec: 0.01, Persist: true}, s)
	now := time.Now().UnixNano()
	for range 3 {
		lim.Allow([]byte("10.0.0.1"), now)
	}
	lim.Allow([]byte("::1"), now)
	if n, err := lim.Flush(ctx, now); err != nil || n != 2 {
		t.Fatalf("flush %d %v", n, err)
	}
	got := map[string]float64{}
	rows, _ := s.pool.Query(ctx, "SELECT client_id, tokens FROM token_buckets")
	for rows.Next() {
		var id string
		var tokens float64
		rows.Scan(&id, &tokens) //nolint:errcheck
		got[id] = tokens
	}
	if int(got["10.0.0.1"]) != 2 || int(got["::1"]) != 4 || len(got) != 2 {
		t.Fatalf("rows %v", got)
	}
}

// TestSyncAddsSpendingOfSeveralInstances plays three instances on one
// database: their spending adds up, overshoot goes into debt, spending
// made under an older admin version is still added (never discarded), and
// a tombstone stays dead for stale buckets but comes back for a new one.
func TestSyncAddsSpendingOfSeveralInstances(t *testing.T) {
	c := pgtest.Require(t)
	s := open(t, c.NewDatabase(t))
	ctx := context.Background()
	const rate = 1e-6
	var insts []*limiter.Limiter
	for range 3 {
		insts = append(insts, limiter.New(limiter.Config{Capacity: 10, RatePerSec: rate, Persist: true}, s))
	}
	now := time.Now().UnixNano()
	for _, l := range insts {
		for range 4 {
			l.Allow([]byte("k"), now)
		}
	}
	for _, l := range insts {
		if _, err := l.Flush(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
	var tokens float64
	s.pool.QueryRow(ctx, "SELECT tokens FROM token_buckets WHERE client_id = 'k'").Scan(&tokens) //nolint:errcheck
	if math.Round(tokens) != -2 {
		t.Fatalf("tokens %v, want 10 - 12 = -2", tokens)
	}
	// An admin PATCH to 5 on one instance; another instance's spending
	// under the old version arrives after it and comes off the new state
	// (its Left, a level under the old version, does not bound it).
	insts[1].Allow([]byte("other"), now) // unrelated
	v, err := s.Save(ctx, limiter.Bucket{ClientID: "k", Capacity: 10, Tokens: 5, RatePerSec: rate, LastRefill: time.Now(), Managed: true})
	if err != nil || v != 1 {
		t.Fatalf("save: version %d, %v", v, err)
	}
	stale := spendOf("k", 3, 0, rate)
	stale.Left = 0
	rows, err := s.Sync(ctx, []limiter.Spend{stale})
	if err != nil || len(rows) != 1 || rows[0].WholeTokens() != 2 || rows[0].Version != 1 || !rows[0].Managed {
		t.Fatalf("spend under an older version after an admin change: %+v %v", rows, err)
	}
	rows, _ = s.Sync(ctx, []limiter.Spend{spendOf("k", 1, 1, rate)})
	if rows[0].WholeTokens() != 1 {
		t.Fatalf("spend under the current version: %+v", rows)
	}
	// Delete: a stale bucket (version 1) cannot bring it back; a new one
	// (version 0) starts a fresh automatic row.
	if v, err := s.Delete(ctx, "k"); err != nil || v != 2 {
		t.Fatalf("delete: version %d, %v", v, err)
	}
	rows, _ = s.Sync(ctx, []limiter.Spend{spendOf("k", 2, 1, rate)})
	if !rows[0].Deleted {
		t.Fatalf("a stale sync undid a delete: %+v", rows)
	}
	rows, _ = s.Sync(ctx, []limiter.Spend{spendOf("k", 2, 0, rate)})
	if rows[0].Deleted || rows[0].Managed || rows[0].WholeTokens() != 8 {
		t.Fatalf("a new bucket after the delete: %+v", rows)
	}
}

// spendOf is a spend of a bucket of capacity 10 that was full until it
// spent at the sync: Left is 10 - spent.
func spendOf(id string, spent float64, version int64, rate float64) limiter.Spend {
	return limiter.Spend{ClientID: id, Spent: spent, Left: 10 - spent, Capacity: 10, RatePerSec: rate, Version: version}
}

// TestSyncSkipsRowsPostgresWouldRefuse: client keys come from hostile
// headers; one the table cannot hold must not fail the batch of the others.
func TestSyncSkipsRowsPostgresWouldRefuse(t *testing.T) {
	c := pgtest.Require(t)
	s := open(t, c.NewDatabase(t))
	ctx := context.Background()
	spends := []limiter.Spend{
		spendOf("\xff\xfe", 1, 0, 1),
		spendOf("a\x00b", 1, 0, 1),
		spendOf(strings.Repeat("x", 257), 1, 0, 1),
		spendOf("nan", math.NaN(), 0, 1),
		spendOf("good", 3, 0, 1),
		spendOf("ünïcode", 1, 0, 1),
	}
	rows, err := s.Sync(ctx, spends)
	if err != nil {
		t.Fatalf("one bad row failed the batch: %v", err)
	}
	got := map[string]int64{}
	for _, r := range rows {
		got[r.ClientID] = r.WholeTokens()
	}
	if len(got) != 2 || got["good"] != 7 || got["ünïcode"] != 9 {
		t.Fatalf("synced rows %v, want good=7 and ünïcode=9 only", got)
	}
}

// TestListenAppliesAdminChangesOfOtherInstances: a change saved through
// one store reaches a limiter listening through another within a second.
func TestListenAppliesAdminChangesOfOtherInstances(t *testing.T) {
	c := pgtest.Require(t)
	url := c.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	lim := limiter.New(limiter.Config{Capacity: 10, RatePerSec: 1, Persist: true}, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := b.Listen(ctx, func(string) *limiter.Limiter { return lim }, nil)
	if err != nil {
		t.Fatal(err)
	}
	go l.Run(ctx, func(err error) { t.Log(err) })
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("%s: not applied within 1 s", what)
	}
	if _, err := a.Save(ctx, limiter.Bucket{ClientID: "x", Capacity: 3, Tokens: 1, RatePerSec: 1, LastRefill: time.Now(), Managed: true}); err != nil {
		t.Fatal(err)
	}
	wait("create", func() bool { got, ok := lim.Get("x", time.Now().UnixNano()); return ok && got.Capacity == 3 })
	if _, err := a.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	wait("delete", func() bool { _, ok := lim.Get("x", time.Now().UnixNano()); return !ok })
}

func TestOpenGivesUpOnUnreachableDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Open(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1", zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("took %v to give up", time.Since(start))
	}
	if _, err := Open(context.Background(), "not a url ::", zerolog.Nop()); err == nil {
		t.Fatal("bad URL accepted")
	}
}

// BenchmarkPersist100k syncs 100,000 changed buckets, as one Flush does.
func BenchmarkPersist100k(b *testing.B) {
	c := pgtest.Require(b)
	s := open(b, c.NewDatabase(b))
	spends := make([]limiter.Spend, 100_000)
	for i := range spends {
		spends[i] = limiter.Spend{ClientID: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Spent: 1, Left: 50, Capacity: 100, RatePerSec: 100}
	}
	if _, err := s.Sync(context.Background(), spends); err != nil { // first insert
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sync(context.Background(), spends); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoad1M loads one million buckets into a limiter, as start-up does.
func BenchmarkLoad1M(b *testing.B) {
	c := pgtest.Require(b)
	s := open(b, c.NewDatabase(b))
	ctx := context.Background()
	_, err := s.pool.Exec(ctx, `INSERT INTO token_buckets (client_id, capacity, tokens, rate_per_sec, last_refill)
		SELECT 'client-' || g, 100, 50, 100, now() FROM generate_series(1, 1000000) g`)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		lim := limiter.New(limiter.Config{Capacity: 100, RatePerSec: 100}, s)
		if n, err := s.LoadInto(ctx, lim, 0); err != nil || n != 1_000_000 {
			b.Fatal(n, err)
		}
	}
}

// TestPurgeRemovesOnlyWhatNobodyNeeds: full automatic rows unused for the
// TTL and old tombstones go; rows in debt, admin rows and recent rows stay.
func TestPurgeRemovesOnlyWhatNobodyNeeds(t *testing.T) {
	c := pgtest.Require(t)
	s := open(t, c.NewDatabase(t))
	ctx := context.Background()
	_, err := s.pool.Exec(ctx, `
INSERT INTO token_buckets (client_id, capacity, tokens, rate_per_sec, last_refill, managed, deleted, updated_at, admin_at) VALUES
  ('full-old',      10, 10, 1e-9, now() - interval '2 days', false, false, now() - interval '2 days', now() - interval '2 days'),
  ('debt-old',      10, -5, 1e-9, now() - interval '2 days', false, false, now() - interval '2 days', now() - interval '2 days'),
  ('admin-old',     10, 10, 1e-9, now() - interval '2 days', true,  false, now() - interval '2 days', now() - interval '2 days'),
  ('tombstone-old', 10, 10, 1e-9, now() - interval '2 days', false, true,  now() - interval '2 days', now() - interval '2 days'),
  ('full-recent',   10, 10, 1e-9, now(),                     false, false, now(),                     now())`)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Purge(ctx, 24*time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("purged %d rows (%v), want 2", n, err)
	}
	var left []string
	rows, _ := s.pool.Query(ctx, "SELECT client_id FROM token_buckets ORDER BY client_id")
	for rows.Next() {
		var id string
		rows.Scan(&id) //nolint:errcheck
		left = append(left, id)
	}
	if strings.Join(left, ",") != "admin-old,debt-old,full-recent" {
		t.Fatalf("left %v", left)
	}
}

// TestSyncBoundsRowsByWhatTheInstanceHasLeft: the row keeps the refill a
// client used while it spent between two syncs (Spend.Left bounds it),
// and other instances' spending still comes off it.
func TestSyncBoundsRowsByWhatTheInstanceHasLeft(t *testing.T) {
	c := pgtest.Require(t)
	s := open(t, c.NewDatabase(t))
	ctx := context.Background()
	sync := func(sp limiter.Spend) limiter.Bucket {
		t.Helper()
		sp.Capacity, sp.RatePerSec = 10, 100
		rows, err := s.Sync(ctx, []limiter.Spend{sp})
		if err != nil || len(rows) != 1 {
			t.Fatalf("sync %+v: %v %v", sp, rows, err)
		}
		return rows[0]
	}
	// 30 admitted in 200 ms from a bucket of 10 at 100/s: 2 left here. A
	// store that charged all 30 at the sync would say -20 (the debt bound).
	if row := sync(limiter.Spend{ClientID: "k", Spent: 30, Left: 2}); math.Abs(row.Tokens-2) > 0.01 {
		t.Fatalf("new row: %+v, want 2 tokens", row)
	}
	time.Sleep(250 * time.Millisecond)
	// 20 more in the next 250 ms, 1 left here: refilled without the cap,
	// the row would have 7; what this instance has left bounds it.
	if row := sync(limiter.Spend{ClientID: "k", Spent: 20, Left: 1}); math.Abs(row.Tokens-1) > 0.01 {
		t.Fatalf("second sync: %+v, want 1 token", row)
	}
	// Another instance that saw the bucket full spends 5 at once: it comes
	// off the row (about -4; the refill since is a few tokens at most).
	if row := sync(limiter.Spend{ClientID: "k", Spent: 5, Left: 5}); row.Tokens > -2 || row.Tokens < -4.01 {
		t.Fatalf("other instance's spend: %+v, want about -4 tokens", row)
	}
	// A bucket that started in debt here (evicted and back) is created at
	// its level, below capacity - spent.
	if row := sync(limiter.Spend{ClientID: "d", Spent: 1, Left: -5}); math.Abs(row.Tokens+5) > 0.01 {
		t.Fatalf("new row in debt: %+v, want -5 tokens", row)
	}
	if row, ok, err := s.Load(ctx, "d"); err != nil || !ok || row.Tokens < -5 || row.Tokens > -3 {
		t.Fatalf("row in debt read back: %+v %v %v", row, ok, err)
	}
}
