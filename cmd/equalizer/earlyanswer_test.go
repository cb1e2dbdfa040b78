package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/pool/pooltest"
)

// TestEarlyAnswerClosesEvenAfterABodyWasRead: an early answer (429) to a
// request whose body is still coming closes the connection (the rest of
// the body must never be read as a request), also on a keep-alive
// connection whose previous request's body was read to its end.
func TestEarlyAnswerClosesEvenAfterABodyWasRead(t *testing.T) {
	var paths sync.Map
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		paths.Store(string(ctx.Path()), true)
		ctx.SetBodyString("ok")
	})
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":               backend,
		"EQUALIZER_BUCKET_CAPACITY":        "1",
		"EQUALIZER_BUCKET_REFILL_AMOUNT":   "1",
		"EQUALIZER_BUCKET_REFILL_INTERVAL": "1h",
		"EQUALIZER_HEALTH_INTERVAL":        "1h",
	})
	c, err := net.Dial("tcp", in.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	br := bufio.NewReader(c)
	body := strings.Repeat("a", 200<<10) // over the read-ahead: streamed
	fmt.Fprintf(c, "POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	// The second is refused before its body is read; the body hides a
	// request that must never be parsed.
	hidden := "\n\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
	fmt.Fprintf(c, "POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", len(body)+len(hidden))
	go io.WriteString(c, body+hidden) //nolint:errcheck
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 429 {
		t.Fatalf("second request: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	if extra, err := br.ReadByte(); err == nil {
		t.Fatalf("the connection stayed open after a refused body (read %q)", extra)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection stayed open after a refused body")
	}
	time.Sleep(200 * time.Millisecond)
	for path, want := range map[string]bool{"/first": true, "/second": false, "/smuggled": false} {
		if _, ok := paths.Load(path); ok != want {
			t.Errorf("the backend got %s: %v, want %v", path, ok, want)
		}
	}
	in.stop(t, syscall.SIGTERM)
}

// TestBackendAnswerBeforeTheUploadEndsIsPassedOn: a backend that refuses
// an upload before reading it (413) and closes makes our write of the body
// fail; its answer is already on the connection, and the client gets it,
// as through nginx and HAProxy, not a 502. Two backends: one that answers
// at the head and closes (unread data: the close is a reset), and Go's
// net/http with http.MaxBytesReader.
func TestBackendAnswerBeforeTheUploadEndsIsPassedOn(t *testing.T) {
	raw, _ := pooltest.RawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if r.Method == "GET" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") //nolint:errcheck
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large") //nolint:errcheck
	})
	goHTTP := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" {
			return
		}
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 1<<20)); err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		}
	}))
	upload := strings.Repeat("x", 8<<20)
	for name, backend := range map[string]string{"answers at the head": raw, "net/http MaxBytesReader": goHTTP} {
		in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_HEALTH_INTERVAL": "1h"})
		for _, chunked := range []bool{false, true} {
			req, _ := http.NewRequest("POST", "http://"+in.proxy+"/up", io.NopCloser(strings.NewReader(upload)))
			if !chunked {
				req.ContentLength = int64(len(upload))
			}
			// Go's client reads the answer even when its own write of
			// the body fails (the proxy closes after answering early).
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("%s, chunked %v: %v", name, chunked, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 || !strings.HasPrefix(string(body), "too large") {
				t.Errorf("%s, chunked %v: %d %q, want the backend's 413", name, chunked, resp.StatusCode, body)
			}
		}
	}
}
