package limits

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestParseRate(t *testing.T) {
	f := func(in string, want float64) {
		t.Helper()
		got, err := ParseRate(in)
		if want < 0 {
			if err == nil {
				t.Errorf("%q: %v, want an error", in, got)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	f("100/s", 100)
	f("5/m", 5.0/60)
	f("10/h", 10.0/3600)
	f("10000/d", 10000.0/86400)
	f("5/30s", 5.0/30)
	f("1.5/500ms", 3)
	for _, bad := range []string{"", "5", "0/s", "-1/s", "5/fortnight", "5/0s", "x/s", "NaN/s", "5/-1s"} {
		f(bad, -1)
	}
}

func request(t *testing.T, head string) *fasthttp.Request {
	t.Helper()
	req := &fasthttp.Request{}
	req.Header.DisableNormalizing()
	if err := req.Read(bufio.NewReader(strings.NewReader(head + "\r\n"))); err != nil {
		t.Fatal(err)
	}
	return req
}

// TestKeyAppend: each part in order, tagged by kind; a request that lacks
// a part, or whose part is empty or too long, is keyed by its address.
func TestKeyAppend(t *testing.T) {
	ip := []byte("198.51.100.7")
	req := request(t, "GET /a?id=42&empty= HTTP/1.1\r\nHost: h\r\nx-api-KEY: k1\r\nCookie: session=s9; other=o\r\n")
	f := func(recipe, want string) {
		t.Helper()
		k, err := ParseKey(recipe)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(k.Append(nil, req, ip)); got != want {
			t.Errorf("%s: %q, want %q", recipe, got, want)
		}
	}
	f("ip", "198.51.100.7")
	f("header:X-Api-Key", "h:k1") // any case
	f("cookie:session", "c:s9")
	f("query:id", "q:42")
	f("ip+header:X-Api-Key", "198.51.100.7|h:k1")
	f("header:X-Api-Key+cookie:session+query:id", "h:k1|c:s9|q:42")
	f("header:X-Missing", "198.51.100.7")
	f("ip+header:X-Missing", "198.51.100.7")
	f("query:empty", "198.51.100.7")
	long := request(t, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: "+strings.Repeat("a", MaxKeyLen+1)+"\r\n")
	k, _ := ParseKey("header:X-Big")
	if got := string(k.Append([]byte("prefix:"), long, ip)); got != "prefix:198.51.100.7" {
		t.Errorf("an over-long value: %q", got)
	}
	for _, bad := range []string{"", "ip+", "header:", "header:X A", "cookie:", "query:", "host", "ip+ip+bogus:x"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
