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
