package pgstore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gopher-equalizer/limiter"
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
	var versions int
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM schema_migrations").Scan(&versions); err != nil || versions != 1 {
		t.Fatalf("schema_migrations has %d rows (%v), want 1", versions, err)
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
		{"c", 10, -1, 1, "token_buckets_tokens_not_negative"},
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
	var rows []limiter.Bucket
	for i := range batchSize + 5 { // crosses a sub-batch boundary
		rows = append(rows, limiter.Bucket{ClientID: fmt.Sprintf("c%06d", i), Capacity: 10, Tokens: 2.5, RatePerSec: 1, LastRefill: at})
	}
	if err := s.Save(ctx, rows); err != nil {
		t.Fatal(err)
	}
	var first time.Time
	s.pool.QueryRow(ctx, "SELECT updated_at FROM token_buckets WHERE client_id = 'c000001'").Scan(&first) //nolint:errcheck
	// Change one, add one: an upsert.
	changed := []limiter.Bucket{
		{ClientID: "c000001", Capacity: 20, Tokens: 7, RatePerSec: 2, LastRefill: at.Add(time.Second), Managed: true},
		{ClientID: "new", Capacity: 3, Tokens: 0, RatePerSec: 0.5, LastRefill: at},
	}
	if err := s.Save(ctx, changed); err != nil {
		t.Fatal(err)
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
	n, err := s.LoadInto(ctx, lim)
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

	if err := s.Delete(ctx, []string{"new", "c000001", "missing"}); err != nil {
		t.Fatal(err)
	}
	var left int
	s.pool.QueryRow(ctx, "SELECT count(*) FROM token_buckets").Scan(&left) //nolint:errcheck
	if left != batchSize+4 {
		t.Fatalf("%d rows after delete", left)
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
	if got["10.0.0.1"] != 2 || got["::1"] != 4 || len(got) != 2 {
		t.Fatalf("rows %v", got)
	}
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

// BenchmarkPersist100k writes 100,000 changed buckets, as one Flush does.
func BenchmarkPersist100k(b *testing.B) {
	c := pgtest.Require(b)
	s := open(b, c.NewDatabase(b))
	rows := make([]limiter.Bucket, 100_000)
	at := time.Now()
	for i := range rows {
		rows[i] = limiter.Bucket{ClientID: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Capacity: 100, Tokens: 50, RatePerSec: 100, LastRefill: at}
	}
	if err := s.Save(context.Background(), rows); err != nil { // first insert
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for j := range rows {
			rows[j].Tokens = float64(i % 100)
		}
		if err := s.Save(context.Background(), rows); err != nil {
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
		if n, err := s.LoadInto(ctx, lim); err != nil || n != 1_000_000 {
			b.Fatal(n, err)
		}
	}
}
