package main

import (
	"context"
	"encoding/json"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"gopher-equalizer/pgstore/pgtest"
)

// dbTokens reads a bucket's tokens straight from the table; -1 when absent.
func dbTokens(t *testing.T, url, id string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tokens float64
	err = conn.QueryRow(ctx, "SELECT tokens FROM token_buckets WHERE client_id = $1 AND NOT deleted", id).Scan(&tokens)
	if err == pgx.ErrNoRows {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func pgEnv(t *testing.T, url string) map[string]string {
	return map[string]string{
		"EQUALIZER_BACKENDS":               okBackend(t),
		"EQUALIZER_DATABASE_URL":           url,
		"EQUALIZER_BUCKET_CAPACITY":        "10",
		"EQUALIZER_BUCKET_REFILL_AMOUNT":   "1",
		"EQUALIZER_BUCKET_REFILL_INTERVAL": "1h", // no visible refill during a test
		"EQUALIZER_CLIENT_KEY":             "header:X-Client",
		"EQUALIZER_PERSIST_INTERVAL":       "200ms",
	}
}

func (in *instance) spend(t *testing.T, client string, n int) {
	t.Helper()
	for i := range n {
		if code, _, _ := in.get(t, "/", "X-Client", client); code != 200 {
			t.Fatalf("%s request %d: %d", client, i, code)
		}
	}
}

func (in *instance) tokens(t *testing.T, id string) int64 {
	t.Helper()
	code, body := in.adminCall(t, "GET", "/buckets/"+id, "")
	if code != 200 {
		t.Fatalf("GET bucket %s: %d %s", id, code, body)
	}
	var b struct{ Tokens int64 }
	json.Unmarshal([]byte(body), &b) //nolint:errcheck
	return b.Tokens
}

func TestGracefulStopFlushesAndRestartLoads(t *testing.T) {
	c := pgtest.Require(t)
	url := c.NewDatabase(t)
	env := pgEnv(t, url)
	env["EQUALIZER_PERSIST_INTERVAL"] = "1h" // only the final flush can write
	in := startInstance(t, env)
	in.spend(t, "alice", 4)
	if code, body := in.adminCall(t, "POST", "/buckets", `{"client_id":"bob","capacity":50,"tokens":20}`); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	if code := in.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if got := dbTokens(t, url, "alice"); math.Abs(got-6) > 0.01 {
		t.Fatalf("alice in the table after SIGTERM: %v, want 6", got)
	}
	in = startInstance(t, env)
	if got := in.tokens(t, "alice"); got != 6 {
		t.Fatalf("alice after restart: %d tokens, want 6", got)
	}
	if got := in.tokens(t, "bob"); got != 20 {
		t.Fatalf("bob after restart: %d tokens, want 20", got)
	}
	in.spend(t, "alice", 6)
	if code, _, _ := in.get(t, "/", "X-Client", "alice"); code != 429 {
		t.Fatalf("alice past her restored tokens: %d", code)
	}
	in.stop(t, syscall.SIGTERM)
}

func TestSIGKILLLosesAtMostOneInterval(t *testing.T) {
	c := pgtest.Require(t)
	url := c.NewDatabase(t)
	env := pgEnv(t, url)
	in := startInstance(t, env)
	in.spend(t, "alice", 3)
	waitFor(t, "the persister to write 3 spent tokens", func() bool { return math.Abs(dbTokens(t, url, "alice")-7) < 0.01 })
	in.spend(t, "alice", 2)
	in.stop(t, syscall.SIGKILL)
	in = startInstance(t, env)
	got := in.tokens(t, "alice")
	if got < 5 || got > 7 {
		t.Fatalf("alice after SIGKILL: %d tokens, want 5 (nothing lost) to 7 (the last interval lost)", got)
	}
	in.stop(t, syscall.SIGTERM)
}

func TestAdminWritesReachTheTableBeforeTheAnswer(t *testing.T) {
	c := pgtest.Require(t)
	url := c.NewDatabase(t)
	env := pgEnv(t, url)
	env["EQUALIZER_PERSIST_INTERVAL"] = "1h" // the persister cannot be the one writing
	env["EQUALIZER_SYNC_INTERVAL"] = "1h"
	in := startInstance(t, env)
	f := func(method, path, body string, wantCode int, wantTokens float64) {
		t.Helper()
		if code, resp := in.adminCall(t, method, path, body); code != wantCode {
			t.Fatalf("%s %s: %d %s", method, path, code, resp)
		}
		if got := dbTokens(t, url, "c1"); math.Abs(got-wantTokens) > 0.01 {
			t.Fatalf("after %s: table has %v tokens, want %v", method, got, wantTokens)
		}
	}
	f("POST", "/buckets", `{"client_id":"c1","capacity":10,"tokens":4}`, 201, 4)
	f("PATCH", "/buckets/c1", `{"tokens":9}`, 204, 9)
	f("PUT", "/buckets/c1", `{"capacity":5}`, 204, 5)
	f("DELETE", "/buckets/c1", ``, 204, -1)
	in.stop(t, syscall.SIGTERM)
}

func TestPostgresOutage(t *testing.T) {
	c := pgtest.Require(t)
	if !c.CanRestart() {
		t.Skip("EQUALIZER_TEST_DATABASE_URL is set: this test needs a cluster it can stop")
	}
	url := c.NewDatabase(t)
	in := startInstance(t, pgEnv(t, url))
	in.spend(t, "alice", 2)
	waitFor(t, "the first flush", func() bool { return math.Abs(dbTokens(t, url, "alice")-8) < 0.01 })

	if err := c.StopServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			c.StartServer() //nolint:errcheck
		}
	})
	// Proxying and limiting go on from memory.
	in.spend(t, "alice", 3)
	in.spend(t, "newcomer", 1)
	if code, body := in.adminCall(t, "POST", "/buckets", `{"client_id":"x","capacity":1}`); code != 503 {
		t.Fatalf("POST during the outage: %d %s", code, body)
	}
	if code, _ := in.adminCall(t, "PATCH", "/buckets/alice", `{"tokens":10}`); code != 503 {
		t.Fatalf("PATCH during the outage: %d", code)
	}
	if code, _ := in.adminCall(t, "GET", "/readyz", ""); code != 503 {
		t.Fatalf("/readyz during the outage: %d", code)
	}
	if got := in.tokens(t, "alice"); got != 5 {
		t.Fatalf("alice during the outage: %d, want 5 (the failed PATCH must change nothing)", got)
	}

	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	waitFor(t, "spending during the outage to be written", func() bool {
		return math.Abs(dbTokens(t, url, "alice")-5) < 0.01 && math.Abs(dbTokens(t, url, "newcomer")-9) < 0.01
	})
	waitFor(t, "/readyz", func() bool { code, _ := in.adminCall(t, "GET", "/readyz", ""); return code == 200 })
	if code, body := in.adminCall(t, "PATCH", "/buckets/alice", `{"tokens":10}`); code != 204 {
		t.Fatalf("PATCH after the outage: %d %s", code, body)
	}
	in.stop(t, syscall.SIGTERM)
}

// TestAdminWriteRightAfterDatabaseRestart: a restart leaves dead
// connections in the pool; the first admin write after it must not be
// the one that finds out.
func TestAdminWriteRightAfterDatabaseRestart(t *testing.T) {
	c := pgtest.Require(t)
	if !c.CanRestart() {
		t.Skip("EQUALIZER_TEST_DATABASE_URL is set: this test needs a cluster it can stop")
	}
	url := c.NewDatabase(t)
	env := pgEnv(t, url)
	env["EQUALIZER_PERSIST_INTERVAL"] = "1h" // nothing else touches the pool
	env["EQUALIZER_SYNC_INTERVAL"] = "1h"
	in := startInstance(t, env)
	if code, body := in.adminCall(t, "POST", "/buckets", `{"client_id":"c1","capacity":10}`); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	if err := c.StopServer(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	if code, body := in.adminCall(t, "PATCH", "/buckets/c1", `{"tokens":3}`); code != 204 {
		t.Fatalf("first PATCH after the restart: %d %s", code, body)
	}
	if got := dbTokens(t, url, "c1"); math.Abs(got-3) > 0.01 {
		t.Fatalf("table has %v tokens, want 3", got)
	}
	in.stop(t, syscall.SIGTERM)
}

func TestUnreachableDatabaseEndsStartUp(t *testing.T) {
	cmd := newCmd(t, map[string]string{
		"EQUALIZER_DATABASE_URL":             "postgres://x@127.0.0.1:1/none?sslmode=disable",
		"EQUALIZER_DATABASE_CONNECT_TIMEOUT": "1s",
		"EQUALIZER_LISTEN":                   freeAddr(t),
		"EQUALIZER_ADMIN_LISTEN":             freeAddr(t),
	})
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(interface{ ExitCode() int }); !ok || exit.ExitCode() == 0 {
		t.Fatalf("exit: %v\n%s", err, out)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
	if !containsAll(string(out), "EQUALIZER_DATABASE_URL", "unreachable") {
		t.Fatalf("output does not explain: %s", out)
	}
}
