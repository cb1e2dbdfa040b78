package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/valyala/fasthttp"

	"gopher-equalizer/pgstore/pgtest"
)

// sharedEnv is the environment of instances sharing one database.
func sharedEnv(t *testing.T, url, capacity, refill string) map[string]string {
	return map[string]string{
		"EQUALIZER_BACKENDS":               okBackend(t),
		"EQUALIZER_DATABASE_URL":           url,
		"EQUALIZER_BUCKET_CAPACITY":        capacity,
		"EQUALIZER_BUCKET_REFILL_AMOUNT":   refill,
		"EQUALIZER_BUCKET_REFILL_INTERVAL": "1s",
		"EQUALIZER_CLIENT_KEY":             "header:X-Client",
		"EQUALIZER_HEALTH_INTERVAL":        "1h",
		"EQUALIZER_LOG_LEVEL":              "warn",
	}
}

// drive sends requests for key to in at the given rate until stop, and
// counts the admitted ones.
func drive(in *instance, key string, every time.Duration, stop <-chan struct{}, admitted *atomic.Int64, wg *sync.WaitGroup) {
	wg.Go(func() {
		client := &http.Client{Timeout: 5 * time.Second}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			req, _ := http.NewRequest("GET", "http://"+in.proxy+"/", nil)
			req.Header.Set("X-Client", key)
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == 200 {
				admitted.Add(1)
			}
		}
	})
}

// TestThreeInstancesShareOneLimit drives one key evenly over 3 instances.
// EQUALIZER_TEST_INSTANCES=1,2,3 runs it for each count (the accuracy table
// in bench/RESULTS.md).
func TestThreeInstancesShareOneLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 20 s")
	}
	counts := []int{3}
	if v := os.Getenv("EQUALIZER_TEST_INSTANCES"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			n, _ := strconv.Atoi(f)
			counts = append(counts, n)
		}
	}
	for _, n := range counts {
		t.Run(fmt.Sprintf("%d instances", n), func(t *testing.T) { shareOneKey(t, n) })
	}
}

func shareOneKey(t *testing.T, n int) {
	_, _, ins := startShared(t, n, "50", "10")
	var admitted atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	start := time.Now()
	for _, in := range ins {
		drive(in, "one-key", 20*time.Millisecond, stop, &admitted, &wg) // 50/s each: 5 times the refill and more
	}
	time.Sleep(20 * time.Second)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	want := 50 + 10*elapsed
	got := float64(admitted.Load())
	t.Logf("%d instances, capacity 50, refill 10/s, %.1f s: admitted %.0f, ideal %.0f (%+.1f%%)", n, elapsed, got, want, 100*(got-want)/want)
	if math.Abs(got-want) > 0.05*want {
		t.Fatalf("admitted %.0f, want %.0f +- 5%%", got, want)
	}
}

func TestAdminChangesReachEveryInstance(t *testing.T) {
	url, _, ins := startShared(t, 3, "50", "1")
	a, b, cc := ins[0], ins[1], ins[2]
	seen := func(what string, in *instance, cond func(code int, body string) bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
			code, body := in.adminCall(t, "GET", "/buckets/k", "")
			if cond(code, body) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not seen by %s within 1 s: %d %s", what, in.proxy, code, body)
			}
		}
	}
	b.spend(t, "k", 3) // B knows k as an automatic bucket
	if code, body := a.adminCall(t, "POST", "/buckets", `{"client_id":"k","capacity":5,"tokens":5}`); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	for _, in := range []*instance{b, cc} {
		seen("POST", in, func(code int, body string) bool { return code == 200 && contains(body, `"capacity":5`) })
	}
	if code, _ := a.adminCall(t, "PATCH", "/buckets/k", `{"tokens":0}`); code != 204 {
		t.Fatal("PATCH")
	}
	for _, in := range []*instance{b, cc} {
		seen("PATCH", in, func(code int, body string) bool { return code == 200 && contains(body, `"tokens":0`) })
	}
	if code, _, _ := b.get(t, "/", "X-Client", "k"); code != 429 {
		t.Fatalf("B admitted a request after PATCH tokens 0 on A: %d", code)
	}
	// Syncs of every instance go on; the change must not be undone.
	time.Sleep(time.Second)
	for _, in := range ins {
		if code, body := in.adminCall(t, "GET", "/buckets/k", ""); code != 200 || !contains(body, `"capacity":5`) {
			t.Fatalf("the admin change was undone on %s: %d %s", in.proxy, code, body)
		}
	}
	if code, _ := a.adminCall(t, "DELETE", "/buckets/k", ""); code != 204 {
		t.Fatal("DELETE")
	}
	for _, in := range []*instance{b, cc} {
		seen("DELETE", in, func(code int, _ string) bool { return code == 404 })
	}
	time.Sleep(time.Second)
	if got := dbTokens(t, url, "k"); got != -1 {
		t.Fatalf("a sync brought the deleted row back: %v tokens", got)
	}
	// The client's next request starts a fresh default bucket everywhere.
	if code, _, _ := cc.get(t, "/", "X-Client", "k"); code != 200 {
		t.Fatalf("after DELETE: %d", code)
	}
	// A bucket only B has seen is there for the admin API of A too.
	b.spend(t, "only-b", 2)
	time.Sleep(500 * time.Millisecond) // B's sync writes the row
	if code, body := a.adminCall(t, "GET", "/buckets/only-b", ""); code != 200 || !contains(body, `"tokens":48`) {
		t.Fatalf("GET on A of a bucket B made: %d %s", code, body)
	}
	if code, body := a.adminCall(t, "PATCH", "/buckets/only-b", `{"tokens":1}`); code != 204 {
		t.Fatalf("PATCH on A of a bucket B made: %d %s", code, body)
	}
	seenKey := func(in *instance) bool {
		code, body := in.adminCall(t, "GET", "/buckets/only-b", "")
		return code == 200 && contains(body, `"tokens":1`)
	}
	for deadline := time.Now().Add(time.Second); !seenKey(b); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("B did not see A's PATCH of its bucket within 1 s")
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// startShared starts n instances on one new database with the given
// default capacity and refill per second.
func startShared(t *testing.T, n int, capacity, refill string) (url string, env map[string]string, ins []*instance) {
	t.Helper()
	c := pgtest.Require(t)
	url = c.NewDatabase(t)
	env = sharedEnv(t, url, capacity, refill)
	for range n {
		ins = append(ins, startInstanceOf(t, plainBinary(t), env))
	}
	return url, env, ins
}

func TestThreeInstancesManyKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 20 s")
	}
	_, _, ins := startShared(t, 3, "5", "1")
	const keys, workers = 1000, 32
	admitted := make([]atomic.Int64, keys)
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	// Every instance sees every key once a second: 3 requests a second
	// per key against a refill of 1.
	for _, in := range ins {
		for w := range workers {
			wg.Go(func() {
				client := &fasthttp.HostClient{Addr: in.proxy, MaxConns: 1}
				var req fasthttp.Request
				var resp fasthttp.Response
				for round := 0; ; round++ {
					for k := w; k < keys; k += workers {
						select {
						case <-stop:
							return
						default:
						}
						req.SetRequestURI("http://" + in.proxy + "/")
						req.Header.Set("X-Client", fmt.Sprintf("key-%d", k))
						sent.Add(1)
						if client.DoTimeout(&req, &resp, 5*time.Second) == nil && resp.StatusCode() == 200 {
							admitted[k].Add(1)
						}
					}
					time.Sleep(time.Until(start.Add(time.Duration(round+1) * time.Second)))
				}
			})
		}
	}
	time.Sleep(20 * time.Second)
	close(stop)
	wg.Wait()
	want := 5 + time.Since(start).Seconds()
	worst, off := 0.0, 0
	var total int64
	for k := range admitted {
		total += admitted[k].Load()
	}
	t.Logf("mean admitted per key %.1f", float64(total)/keys)
	for k := range admitted {
		d := math.Abs(float64(admitted[k].Load())-want) / want
		worst = max(worst, d)
		if d > 0.10 {
			off++
		}
	}
	t.Logf("1,000 keys over 3 instances: %d requests sent, ideal %.1f admitted each, worst key off by %.1f%%, %d keys beyond 10%%",
		sent.Load(), want, 100*worst, off)
	if float64(sent.Load()) < 2*want*keys {
		t.Fatalf("the test could send only %d requests, not enough to drive every key above its limit", sent.Load())
	}
	if off > 0 {
		t.Fatalf("%d of %d keys off by more than 10%%", off, keys)
	}
}

func TestRestartUnderLoadNeitherLosesNorDoubles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 20 s")
	}
	_, env, ins := startShared(t, 3, "50", "10")
	var admitted atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	start := time.Now()
	for _, in := range ins[:2] {
		drive(in, "one-key", 20*time.Millisecond, stop, &admitted, &wg)
	}
	stopC := make(chan struct{})
	drive(ins[2], "one-key", 20*time.Millisecond, stopC, &admitted, &wg)
	time.Sleep(8 * time.Second)
	// Restart the third instance: graceful stop, start again, traffic on.
	close(stopC)
	if code := ins[2].stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	again := startInstanceOf(t, plainBinary(t), env)
	drive(again, "one-key", 20*time.Millisecond, stop, &admitted, &wg)
	time.Sleep(time.Until(start.Add(20 * time.Second)))
	close(stop)
	wg.Wait()
	want := 50 + 10*time.Since(start).Seconds()
	got := float64(admitted.Load())
	t.Logf("restart under load: admitted %.0f, ideal %.0f (%.1f%%)", got, want, 100*(got-want)/want)
	if math.Abs(got-want) > 0.05*want {
		t.Fatalf("admitted %.0f, want %.0f +- 5%%", got, want)
	}
}

// TestBigTableAndTinyRate: a table with more rows than EQUALIZER_MAX_BUCKETS
// loads what fits and deletes nothing, a new client gets in at once; a rate
// of 1 token per 1000 h is stored exactly and persisted.
func TestBigTableAndTinyRate(t *testing.T) {
	c := pgtest.Require(t)
	url := c.NewDatabase(t)
	env := sharedEnv(t, url, "10", "1")
	env["EQUALIZER_BUCKET_REFILL_INTERVAL"] = "1000h"
	env["EQUALIZER_MAX_BUCKETS"] = "1000"
	in := startInstanceOf(t, plainBinary(t), env) // creates the schema
	in.stop(t, syscall.SIGTERM)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO token_buckets (client_id, capacity, tokens, rate_per_sec, last_refill)
		SELECT 'old-' || g, 10, 3, 1, now() FROM generate_series(1, 1500) g`); err != nil {
		t.Fatal(err)
	}
	in = startInstanceOf(t, plainBinary(t), env)
	if code, _, _ := in.get(t, "/", "X-Client", "newcomer"); code != 200 {
		t.Fatalf("a new client with a full table: %d", code)
	}
	in.spend(t, "tiny", 3)
	if code := in.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d\n%s", code, in.log())
	}
	var rows int
	var rate float64
	conn.QueryRow(ctx, "SELECT count(*) FROM token_buckets WHERE client_id LIKE 'old-%'").Scan(&rows) //nolint:errcheck
	conn.QueryRow(ctx, "SELECT rate_per_sec FROM token_buckets WHERE client_id = 'tiny'").Scan(&rate) //nolint:errcheck
	if rows != 1500 {
		t.Fatalf("%d of 1500 rows left: eviction or loading deleted rows", rows)
	}
	if want := 1 / (1000 * 3600.0); math.Abs(rate-want) > want*1e-6 {
		t.Fatalf("rate stored as %g, want %g", rate, want)
	}
	if got := dbTokens(t, url, "tiny"); math.Abs(got-7) > 0.01 {
		t.Fatalf("tiny has %v tokens in the table, want 7", got)
	}
}

// TestSIGKILLOfOneInstance: three instances spend on one key; one is
// killed mid-traffic. The table ends with every admitted request of the
// others and all of the killed one's but at most its last sync interval;
// nothing is counted twice.
func TestSIGKILLOfOneInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 5 s")
	}
	c := pgtest.Require(t)
	url := c.NewDatabase(t)
	env := sharedEnv(t, url, "100000", "1")
	env["EQUALIZER_BUCKET_REFILL_INTERVAL"] = "1h"
	env["EQUALIZER_SYNC_INTERVAL"] = "1s"
	var ins []*instance
	for range 3 {
		ins = append(ins, startInstanceOf(t, plainBinary(t), env))
	}
	var killedAdmitted, othersAdmitted atomic.Int64
	var wgA, wg sync.WaitGroup
	stopA, stop := make(chan struct{}), make(chan struct{})
	drive(ins[0], "k", 20*time.Millisecond, stopA, &killedAdmitted, &wgA) // 50/s
	for _, in := range ins[1:] {
		drive(in, "k", 20*time.Millisecond, stop, &othersAdmitted, &wg)
	}
	time.Sleep(3500 * time.Millisecond)
	ins[0].stop(t, syscall.SIGKILL)
	close(stopA)
	wgA.Wait()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	for _, in := range ins[1:] {
		if code := in.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("exit %d\n%s", code, in.log())
		}
	}
	stored := 100000 - dbTokens(t, url, "k")
	admitted := float64(killedAdmitted.Load() + othersAdmitted.Load())
	lost := admitted - stored
	t.Logf("admitted %.0f (killed instance %d), stored %.0f spent, lost %.0f (one interval of the killed instance: about 50)",
		admitted, killedAdmitted.Load(), stored, lost)
	// A request charged just before the kill may be stored without its
	// answer reaching the client: a couple of tokens of slack that way.
	if lost < -3 || lost > 50*1.5 {
		t.Fatalf("lost %.0f tokens of spending, want 0 to one sync interval of the killed instance (about 50)", lost)
	}
}
