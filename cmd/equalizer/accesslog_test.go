package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

type accessLine struct {
	Time             time.Time `json:"time"`
	Client           string    `json:"client"`
	ClientKey        string    `json:"client_key"`
	Method           string    `json:"method"`
	URI              string    `json:"uri"`
	Protocol         string    `json:"protocol"`
	Status           int       `json:"status"`
	BytesIn          int64     `json:"bytes_in"`
	BytesOut         int64     `json:"bytes_out"`
	Duration         float64   `json:"duration"`
	UpstreamDuration float64   `json:"upstream_duration"`
	Backend          string    `json:"backend"`
	Limited          bool      `json:"limited"`
	RequestID        string    `json:"request_id"`
	UserAgent        string    `json:"user_agent"`
}

func readAccessLog(t *testing.T, path string) []accessLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []accessLine
	s := bufio.NewScanner(f)
	for s.Scan() {
		var l accessLine
		if err := json.Unmarshal(s.Bytes(), &l); err != nil {
			t.Fatalf("not a JSON line: %q: %v", s.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// TestAccessLog: N requests of several kinds give N lines with the fields
// an nginx user expects, streamed responses with the bytes really sent;
// SIGUSR1 after a rename moves the log to a new file; SIGTERM writes all.
func TestAccessLog(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/big" {
			ctx.SetBodyString(big)
			return
		}
		if string(ctx.Path()) == "/unknown-length" {
			ctx.SetBodyStream(strings.NewReader(big), -1) // chunked
			return
		}
		ctx.SetBodyString("ok")
	})
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":               backend,
		"EQUALIZER_CLIENT_KEY":             "header:X-Client",
		"EQUALIZER_BUCKET_CAPACITY":        "5",
		"EQUALIZER_BUCKET_REFILL_AMOUNT":   "1",
		"EQUALIZER_BUCKET_REFILL_INTERVAL": "1h",
		"EQUALIZER_ACCESS_LOG":             path,
		"EQUALIZER_HEALTH_INTERVAL":        "1h",
	})
	type sent struct {
		method, uri, client, body string
		status                    int
		id                        string
		bytesOut                  int64
		proto                     string
	}
	var reqs []sent
	send := func(method, uri, client, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+in.proxy+uri, strings.NewReader(body))
		req.Header.Set("X-Client", client)
		req.Header.Set("User-Agent", "access-log-test/1.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		reqs = append(reqs, sent{method, uri, client, body, resp.StatusCode, resp.Header.Get("X-Request-ID"), n, "HTTP/1.1"})
	}
	for i := range 4 {
		send("GET", fmt.Sprintf("/page?i=%d", i), "alice", "")
	}
	send("POST", "/form", "bob", "name=value&x=1")
	send("GET", "/big", "carol", "")
	for range 3 {
		send("GET", "/", "dave", "")
	}
	for range 3 {
		send("GET", "/", "alice", "") // alice has 1 token left: 1 forwarded, 2 limited
	}
	// HTTP/1.0 and a body of unknown length: sent until the connection
	// closes, and the line says how much went out.
	c, err := net.Dial("tcp", in.proxy)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /unknown-length HTTP/1.0\r\nX-Client: frank\r\nUser-Agent: access-log-test/1.0\r\n\r\n") //nolint:errcheck
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	c.Close()
	if n != int64(len(big)) {
		t.Fatalf("HTTP/1.0 client got %d bytes of %d", n, len(big))
	}
	reqs = append(reqs, sent{"GET", "/unknown-length", "frank", "", resp.StatusCode, resp.Header.Get("X-Request-ID"), n, "HTTP/1.0"})
	// Rotate: rename, SIGUSR1, and the next lines go to a new file.
	waitFor(t, "the first lines", func() bool { _, err := os.Stat(path); return err == nil && len(readAccessLog(t, path)) == len(reqs) })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	in.cmd.Process.Signal(syscall.SIGUSR1) //nolint:errcheck
	waitFor(t, "the log to be reopened", func() bool { _, err := os.Stat(path); return err == nil })
	before := len(reqs)
	for range 5 {
		send("GET", "/after", "erin", "")
	}
	if code := in.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := append(readAccessLog(t, path+".1"), readAccessLog(t, path)...)
	if len(lines) != len(reqs) || len(readAccessLog(t, path)) != len(reqs)-before {
		t.Fatalf("%d requests, %d lines (%d in the new file, want %d)", len(reqs), len(lines), len(readAccessLog(t, path)), len(reqs)-before)
	}
	for i, r := range reqs {
		l := lines[i]
		wantBytesIn := int64(len(r.body))
		switch {
		case l.Method != r.method || l.URI != r.uri || l.Status != r.status || l.ClientKey != r.client:
			t.Errorf("line %d: %+v for %+v", i, l, r)
		case l.RequestID == "" || l.RequestID != r.id:
			t.Errorf("line %d: request ID %q, the client got %q", i, l.RequestID, r.id)
		case l.Protocol != r.proto || l.UserAgent != "access-log-test/1.0" || !strings.HasPrefix(l.Client, "127.0.0.1"):
			t.Errorf("line %d: protocol %q, user agent %q, client %q", i, l.Protocol, l.UserAgent, l.Client)
		case l.BytesIn != wantBytesIn || l.BytesOut != r.bytesOut:
			t.Errorf("line %d (%s): bytes in %d out %d, want %d and %d", i, r.uri, l.BytesIn, l.BytesOut, wantBytesIn, r.bytesOut)
		case l.Limited != (r.status == 429):
			t.Errorf("line %d: limited %v for status %d", i, l.Limited, r.status)
		case r.status == 200 && (l.Backend != backend || l.UpstreamDuration <= 0 || l.Duration < l.UpstreamDuration):
			t.Errorf("line %d: backend %q, duration %v, upstream %v", i, l.Backend, l.Duration, l.UpstreamDuration)
		case time.Since(l.Time) > time.Minute:
			t.Errorf("line %d: time %v", i, l.Time)
		}
	}
}
