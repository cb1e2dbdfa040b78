package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReloadsUnderLoad: backends, weights, strategy and the default
// bucket change on SIGHUP while 8 clients keep sending, and not one request
// fails; an invalid file changes nothing; a setting that needs a restart
// is left as it is.
func TestSIGHUPReloadsUnderLoad(t *testing.T) {
	a, aN := countingBackend(t, 0)
	b, bN := countingBackend(t, 0)
	dir := t.TempDir()
	file := filepath.Join(dir, "equalizer.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := "health_interval: 200ms\nhealth_path: /health\nclient_key: header:X-Client\nbucket_capacity: 1000000\nbucket_refill_amount: 1000000\n"
	write(base + "backends:\n  - http://" + a + "\n")
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})
	hup := func() {
		t.Helper()
		in.cmd.Process.Signal(syscall.SIGHUP) //nolint:errcheck
	}

	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+in.proxy+"/", nil)
				req.Header.Set("X-Client", fmt.Sprintf("load-%d", w))
				resp, err := client.Do(req)
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					t.Logf("request failed: %v", err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Logf("request answered %d", resp.StatusCode)
				}
			}
		})
	}
	waitFor(t, "load", func() bool { return aN.Load() > 100 })

	// Add b with weight 3.
	write(base + "backends:\n  - http://" + a + " weight=1\n  - http://" + b + " weight=3\n")
	hup()
	waitFor(t, "b to get traffic", func() bool { return bN.Load() > 50 })
	a0, b0 := aN.Load(), bN.Load()
	waitFor(t, "more traffic", func() bool { return aN.Load()+bN.Load()-a0-b0 > 400 })
	if share := float64(bN.Load()-b0) / float64(aN.Load()+bN.Load()-a0-b0); share < 0.65 || share > 0.85 {
		t.Fatalf("weight 3 of 4 got %.2f of the requests", share)
	}

	// An invalid file changes nothing.
	write(base + "strategy: fastest\nbackends:\n  - http://" + b + "\n")
	hup()
	waitFor(t, "the rejection in the log", func() bool { return strings.Contains(in.log(), "configuration reload rejected") })
	if n := backendCount(t, in); n != 2 {
		t.Fatalf("a rejected reload changed the backends: %d", n)
	}

	// Only b, least_conn, a smaller default bucket, another listen address.
	write(strings.Replace(base, "bucket_capacity: 1000000", "bucket_capacity: 3", 1) +
		"strategy: least_conn\nidle_timeout: 30s\nbackends:\n  - http://" + b + "\n")
	hup()
	waitFor(t, "a to be drained and removed", func() bool { return backendCount(t, in) == 1 })
	a1 := aN.Load()
	time.Sleep(300 * time.Millisecond)
	if aN.Load() != a1 {
		t.Fatalf("a removed backend still gets requests")
	}
	if !strings.Contains(in.log(), "EQUALIZER_IDLE_TIMEOUT") {
		t.Errorf("the idle timeout change was not reported as needing a restart")
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed across the reloads", failed.Load(), sent.Load())
	}
	t.Logf("%d requests, none failed, across three reloads", sent.Load())
	// The new default bucket, for new clients and the ones in memory.
	in.get(t, "/", "X-Client", "after-reload")
	for _, id := range []string{"after-reload", "load-0"} {
		if code, body := in.adminCall(t, "GET", "/buckets/"+id, ""); code != 200 || !strings.Contains(body, `"capacity":3`) {
			t.Fatalf("bucket %s after the reload: %d %s", id, code, body)
		}
	}
	in.stop(t, syscall.SIGTERM)
}

func backendCount(t *testing.T, in *instance) int {
	t.Helper()
	_, body := in.adminCall(t, "GET", "/backends", "")
	var list []json.RawMessage
	json.Unmarshal([]byte(body), &list) //nolint:errcheck
	return len(list)
}
