package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"gopher-equalizer/limiter"
	"gopher-equalizer/metrics"
	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
	"gopher-equalizer/upstream"
)

// downStore fails every write while down is set, like PostgreSQL gone.
type downStore struct {
	*limiter.MemoryStore
	down atomic.Bool
}

var errDown = errors.New("connection refused")

func (d *downStore) Save(ctx context.Context, b limiter.Bucket) (int64, error) {
	if d.down.Load() {
		return 0, errDown
	}
	return d.MemoryStore.Save(ctx, b)
}

func (d *downStore) Delete(ctx context.Context, id string) (int64, error) {
	if d.down.Load() {
		return 0, errDown
	}
	return d.MemoryStore.Delete(ctx, id)
}

func (d *downStore) Ping(context.Context) error {
	if d.down.Load() {
		return errDown
	}
	return nil
}

type env struct {
	base  string
	lim   *limiter.Limiter
	store *downStore
	pool  *pool.Pool
	api   *API
	token string
}

func start(t *testing.T, token string) *env {
	t.Helper()
	st := &downStore{MemoryStore: limiter.NewMemoryStore()}
	lim := limiter.New(limiter.Config{Capacity: 100, RatePerSec: 100, MaxBuckets: 1000}, st)
	b, _ := pool.NewBackend("http://127.0.0.1:1", upstream.Options{})
	p := pool.New([]*pool.Backend{b}, &pool.RoundRobin{})
	px := proxy.New(proxy.Config{}, p, lim, proxy.ClientKey{}, zerolog.Nop())
	reg := metrics.New(metrics.Sources{Proxy: px, Pool: p, Limiter: lim})
	api := New(Config{Token: token, DefaultLimit: 10, RatePerSec: 100}, lim, p, reg, zerolog.Nop())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: api.Handler(), MaxRequestBodySize: 64 << 10, ErrorHandler: ServerErrorHandler}
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = s.Shutdown() })
	return &env{base: "http://" + ln.Addr().String(), lim: lim, store: st, pool: p, api: api, token: token}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(t *testing.T, method, path, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	if method == "POST" || method == "PUT" || method == "PATCH" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(data)}
}

// raw sends a request the Go client would refuse to build.
func (e *env) raw(t *testing.T, request string) reply {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, request) //nolint:errcheck
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(data)}
}

// expect checks the status and, for errors, that the body is a JSON error
// whose message contains want.
func (r reply) expect(t *testing.T, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if status >= 400 {
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == "" {
			t.Fatalf("error body %q is not {\"error\": ...}", r.body)
		}
		if !strings.Contains(e.Error, want) {
			t.Fatalf("error %q does not mention %q", e.Error, want)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("error Content-Type %q", ct)
		}
	}
}

type bucketOut struct {
	ClientID   string  `json:"client_id"`
	Capacity   int64   `json:"capacity"`
	Tokens     int64   `json:"tokens"`
	RatePerSec float64 `json:"rate_per_sec"`
	LastRefill string  `json:"last_refill"`
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return v
}

func TestCreateAndGet(t *testing.T) {
	e := start(t, "")
	r := e.do(t, "POST", "/buckets", `{"client_id":"10.0.0.1","capacity":50,"tokens":20,"rate_per_sec":5}`)
	r.expect(t, 201, "")
	if r.header.Get("Location") != "/buckets/10.0.0.1" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v", r.header)
	}
	b := decode[bucketOut](t, r.body)
	if b.ClientID != "10.0.0.1" || b.Capacity != 50 || b.Tokens != 20 || b.RatePerSec != 5 {
		t.Fatalf("created %+v", b)
	}
	if _, err := time.Parse(time.RFC3339, b.LastRefill); err != nil {
		t.Fatalf("last_refill %q: %v", b.LastRefill, err)
	}
	if row, ok := e.store.Row("10.0.0.1"); !ok || row.Capacity != 50 {
		t.Fatalf("POST answered before the store had it: %+v", row)
	}
	got := decode[bucketOut](t, e.do(t, "GET", "/buckets/10.0.0.1", "").body)
	if got.Tokens != 20 || got.Capacity != 50 {
		t.Fatalf("GET %+v", got)
	}
	// Defaults: tokens = capacity, rate from the configuration.
	r = e.do(t, "POST", "/buckets", `{"client_id":"::1","capacity":7}`)
	r.expect(t, 201, "")
	if b := decode[bucketOut](t, r.body); b.Tokens != 7 || b.RatePerSec != 100 {
		t.Fatalf("defaults %+v", b)
	}
	if r.header.Get("Location") != "/buckets/::1" {
		t.Fatalf("Location %q", r.header.Get("Location"))
	}
	e.do(t, "POST", "/buckets", `{"client_id":"10.0.0.1","capacity":5}`).expect(t, 409, "exists")
	e.do(t, "GET", "/buckets/10.0.0.2", "").expect(t, 404, "not found")
}

func TestIDsAreURLDecoded(t *testing.T) {
	e := start(t, "")
	for _, id := range []string{"::1", "10.0.0.1", "user/42 with spaces", "key?x=1&y=%", "ключ"} {
		body, _ := json.Marshal(map[string]any{"client_id": id, "capacity": 3})
		e.do(t, "POST", "/buckets", string(body)).expect(t, 201, "")
	}
	f := func(path, want string) {
		t.Helper()
		r := e.do(t, "GET", path, "")
		r.expect(t, 200, "")
		if b := decode[bucketOut](t, r.body); b.ClientID != want {
			t.Fatalf("GET %s: %q, want %q", path, b.ClientID, want)
		}
	}
	f("/buckets/::1", "::1")
	f("/buckets/%3A%3A1", "::1")
	f("/buckets/10.0.0.1", "10.0.0.1")
	f("/buckets/user%2F42%20with%20spaces", "user/42 with spaces")
	f("/buckets/key%3Fx=1&y=%25", "key?x=1&y=%")
	f("/buckets/%D0%BA%D0%BB%D1%8E%D1%87", "ключ")
	e.raw(t, "GET /buckets/%ZZ HTTP/1.1\r\nHost: localhost\r\n\r\n").expect(t, 400, "percent-encoding")
	e.do(t, "GET", "/buckets/a%00b", "").expect(t, 400, "control")
}

func TestListPagination(t *testing.T) {
	e := start(t, "")
	if r := e.do(t, "GET", "/buckets", ""); r.status != 200 || strings.TrimSpace(r.body) != "[]" {
		t.Fatalf("empty list: %d %q", r.status, r.body)
	}
	for _, id := range []string{"e", "b", "a", "d", "c"} {
		e.do(t, "POST", "/buckets", `{"client_id":"`+id+`","capacity":1}`).expect(t, 201, "")
	}
	ids := func(path string) string {
		r := e.do(t, "GET", path, "")
		r.expect(t, 200, "")
		var out []string
		for _, b := range decode[[]bucketOut](t, r.body) {
			out = append(out, b.ClientID)
		}
		return strings.Join(out, ",")
	}
	if got := ids("/buckets"); got != "a,b,c,d,e" {
		t.Fatalf("list %s", got)
	}
	if got := ids("/buckets?limit=2&offset=1"); got != "b,c" {
		t.Fatalf("page %s", got)
	}
	if got := ids("/buckets?offset=5"); got != "" {
		t.Fatalf("past the end %s", got)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=-1", "limit=x", "limit=1.5", "limit=", "offset=-1", "offset=abc"} {
		e.do(t, "GET", "/buckets?"+q, "").expect(t, 400, strings.Split(q, "=")[0])
	}
	if got := ids("/buckets?limit=1000"); got != "a,b,c,d,e" {
		t.Fatalf("limit=1000 %s", got)
	}
}

func TestDefaultPageSize(t *testing.T) {
	e := start(t, "")
	for i := range 12 {
		e.do(t, "POST", "/buckets", `{"client_id":"c`+string(rune('a'+i))+`","capacity":1}`).expect(t, 201, "")
	}
	if n := len(decode[[]bucketOut](t, e.do(t, "GET", "/buckets", "").body)); n != 10 {
		t.Fatalf("default page has %d buckets, want 10", n)
	}
}

func TestStrictInput(t *testing.T) {
	e := start(t, "")
	f := func(body, want string) {
		t.Helper()
		e.do(t, "POST", "/buckets", body).expect(t, 400, want)
	}
	f(``, "empty")
	f(`{"client_id":"a","capacity":1`, "malformed")
	f(`[1,2]`, "object")
	f(`"x"`, "object")
	f(`null`, "object")
	f(`{"client_id":"a","capacity":1} {}`, "after the object")
	f(`{"client_id":"a","capacity":1,"colour":"red"}`, "colour")
	f(`{"capacity":1}`, "client_id is required")
	f(`{"client_id":"","capacity":1}`, "client_id")
	f(`{"client_id":"`+strings.Repeat("x", 257)+`","capacity":1}`, "client_id")
	f(`{"client_id":"a\u0001b","capacity":1}`, "control")
	f(`{"client_id":"a\nb","capacity":1}`, "control")
	f(`{"client_id":7,"capacity":1}`, "client_id must be a string")
	f(`{"client_id":"a"}`, "capacity is required")
	f(`{"client_id":"a","capacity":"5"}`, "capacity must be a number")
	f(`{"client_id":"a","capacity":1.5}`, "capacity must be a whole number")
	f(`{"client_id":"a","capacity":1e3}`, "capacity must be a whole number")
	f(`{"client_id":"a","capacity":0}`, "capacity must be between")
	f(`{"client_id":"a","capacity":-3}`, "capacity must be between")
	f(`{"client_id":"a","capacity":99999999999999999999999}`, "capacity must be between")
	f(`{"client_id":"a","capacity":true}`, "capacity must be a number")
	f(`{"client_id":"a","capacity":5,"tokens":6}`, "tokens must be between")
	f(`{"client_id":"a","capacity":5,"tokens":-1}`, "tokens must be between")
	f(`{"client_id":"a","capacity":5,"rate_per_sec":0}`, "rate_per_sec")
	f(`{"client_id":"a","capacity":5,"rate_per_sec":"fast"}`, "rate_per_sec")
	f(`{"client_id":"a","capacity":1000000000,"rate_per_sec":0.001}`, "too large")
	if e.lim.Len() != 0 || e.store.Len() != 0 {
		t.Fatalf("a rejected write left %d buckets, %d rows", e.lim.Len(), e.store.Len())
	}
	// Bodies over the admin limit are refused from their Content-Length,
	// before they are read (a raw request: the Go client would still be
	// writing the body when the server answers and closes).
	e.raw(t, "POST /buckets HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 71680\r\n\r\n{").expect(t, 413, "too large")
}

func TestPutPatchDelete(t *testing.T) {
	e := start(t, "")
	e.do(t, "POST", "/buckets", `{"client_id":"c","capacity":10,"tokens":8,"rate_per_sec":0.001}`).expect(t, 201, "")
	get := func() bucketOut { return decode[bucketOut](t, e.do(t, "GET", "/buckets/c", "").body) }

	e.do(t, "PUT", "/buckets/c", `{"capacity":5}`).expect(t, 204, "")
	if b := get(); b.Capacity != 5 || b.Tokens != 5 {
		t.Fatalf("after PUT capacity 5: %+v (tokens must be cut)", b)
	}
	if row, _ := e.store.Row("c"); row.Capacity != 5 {
		t.Fatalf("PUT did not reach the store: %+v", row)
	}
	e.do(t, "PUT", "/buckets/c", `{"client_id":"c","capacity":20}`).expect(t, 204, "")
	if b := get(); b.Capacity != 20 || b.Tokens != 5 {
		t.Fatalf("after PUT capacity 20: %+v", b)
	}
	e.do(t, "PUT", "/buckets/c", `{"client_id":"d","capacity":20}`).expect(t, 400, "does not match")
	e.do(t, "PUT", "/buckets/c", `{"capacity":0}`).expect(t, 400, "capacity")
	e.do(t, "PUT", "/buckets/c", `{}`).expect(t, 400, "capacity is required")
	e.do(t, "PUT", "/buckets/c", `{"capacity":5,"tokens":1}`).expect(t, 400, "PATCH")
	e.do(t, "PUT", "/buckets/nope", `{"capacity":5}`).expect(t, 404, "not found")

	e.do(t, "PATCH", "/buckets/c", `{"tokens":3}`).expect(t, 204, "")
	if b := get(); b.Tokens != 3 {
		t.Fatalf("after PATCH: %+v", b)
	}
	if row, _ := e.store.Row("c"); row.WholeTokens() != 3 {
		t.Fatalf("PATCH did not reach the store: %+v", row)
	}
	e.do(t, "PATCH", "/buckets/c", `{"tokens":21}`).expect(t, 400, "tokens")
	e.do(t, "PATCH", "/buckets/c", `{"tokens":-1}`).expect(t, 400, "tokens")
	e.do(t, "PATCH", "/buckets/c", `{"tokens":2.5}`).expect(t, 400, "whole number")
	e.do(t, "PATCH", "/buckets/c", `{"client_id":"x","tokens":2}`).expect(t, 400, "does not match")
	e.do(t, "PATCH", "/buckets/c", `{"capacity":2}`).expect(t, 400, "PUT")
	e.do(t, "PATCH", "/buckets/c", `not json`).expect(t, 400, "object")
	e.do(t, "PATCH", "/buckets/nope", `{"tokens":1}`).expect(t, 404, "not found")
	if b := get(); b.Tokens != 3 || b.Capacity != 20 {
		t.Fatalf("rejected writes changed the bucket: %+v", b)
	}

	e.do(t, "DELETE", "/buckets/c", "").expect(t, 204, "")
	e.do(t, "GET", "/buckets/c", "").expect(t, 404, "not found")
	e.do(t, "DELETE", "/buckets/c", "").expect(t, 404, "not found")
	if _, ok := e.store.Row("c"); ok {
		t.Fatal("DELETE did not reach the store")
	}
}

func TestStoreDownAnswers503AndChangesNothing(t *testing.T) {
	e := start(t, "")
	e.do(t, "POST", "/buckets", `{"client_id":"c","capacity":10}`).expect(t, 201, "")
	e.store.down.Store(true)
	e.do(t, "POST", "/buckets", `{"client_id":"d","capacity":10}`).expect(t, 503, "store unavailable")
	e.do(t, "PUT", "/buckets/c", `{"capacity":3}`).expect(t, 503, "store unavailable")
	e.do(t, "PATCH", "/buckets/c", `{"tokens":1}`).expect(t, 503, "store unavailable")
	e.do(t, "DELETE", "/buckets/c", "").expect(t, 503, "store unavailable")
	e.do(t, "GET", "/readyz", "").expect(t, 503, "store")
	if b := decode[bucketOut](t, e.do(t, "GET", "/buckets/c", "").body); b.Capacity != 10 || b.Tokens != 10 {
		t.Fatalf("failed writes changed memory: %+v", b)
	}
	e.do(t, "GET", "/buckets/d", "").expect(t, 404, "")
	e.store.down.Store(false)
	e.do(t, "GET", "/readyz", "").expect(t, 200, "")
}

func TestBearerToken(t *testing.T) {
	e := start(t, "s3cret")
	e.do(t, "GET", "/buckets", "").expect(t, 200, "")
	for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret2", "Basic s3cret", "Bearers3cret"} {
		for _, path := range []string{"/buckets", "/buckets/x", "/readyz", "/metrics"} {
			req, _ := http.NewRequest("GET", e.base+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			reply{resp.StatusCode, resp.Header, string(body)}.expect(t, 401, "token")
		}
	}
	// The scheme is case-insensitive (RFC 9110 11.1).
	for _, auth := range []string{"bearer s3cret", "BEARER s3cret", "Bearer  s3cret"} {
		req, _ := http.NewRequest("GET", e.base+"/buckets", nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%q: %v %v", auth, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
	// /healthz stays open for probes.
	resp, err := http.Get(e.base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
}

func TestReadyzAndMetrics(t *testing.T) {
	e := start(t, "")
	e.do(t, "GET", "/readyz", "").expect(t, 200, "")
	e.pool.SetHealthy(e.pool.Backends()[0], false)
	e.do(t, "GET", "/readyz", "").expect(t, 503, "no healthy backend")
	e.lim.Allow([]byte("x"), time.Now().UnixNano())
	r := e.do(t, "GET", "/metrics", "")
	for _, want := range []string{
		`equalizer_requests_total{outcome="forwarded"} 0`,
		`equalizer_requests_total{outcome="limited"} 0`,
		`equalizer_backend_up{backend="http://127.0.0.1:1"} 0`,
		`equalizer_backend_requests_total{backend="http://127.0.0.1:1"} 0`,
		`equalizer_limiter_buckets 1`,
		`equalizer_limiter_evictions_total 0`,
		"# TYPE equalizer_requests_total counter",
		"# TYPE equalizer_backend_response_seconds histogram",
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, r.body)
		}
	}
	if !bytes.HasPrefix([]byte(r.header.Get("Content-Type")), []byte("text/plain")) {
		t.Errorf("metrics Content-Type %q", r.header.Get("Content-Type"))
	}
	e.do(t, "GET", "/nope", "").expect(t, 404, "route")
}

func TestReadyzDuringShutdown(t *testing.T) {
	e := start(t, "")
	e.do(t, "GET", "/readyz", "").expect(t, 200, "")
	e.api.SetDraining()
	e.do(t, "GET", "/readyz", "").expect(t, 503, "shutting down")
	e.do(t, "GET", "/healthz", "").expect(t, 200, "")
}

func TestBrowserCannotDriveTheAPI(t *testing.T) {
	e := start(t, "")
	addr := strings.TrimPrefix(e.base, "http://")
	body := `{"client_id":"csrf","capacity":1}`
	post := func(headers string) reply {
		return e.raw(t, fmt.Sprintf("POST /buckets HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s", headers, len(body), body))
	}
	// A cross-origin form or fetch without preflight: text/plain.
	post("Host: "+addr+"\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\n").expect(t, 403, "cross-origin")
	post("Host: "+addr+"\r\nContent-Type: text/plain\r\n").expect(t, 415, "application/json")
	post("Host: "+addr+"\r\n").expect(t, 415, "application/json")
	post("Host: "+addr+"\r\nOrigin: null\r\nContent-Type: application/json\r\n").expect(t, 403, "cross-origin")
	// DNS rebinding: the page's own name in Host.
	post("Host: evil.example:"+strings.Split(addr, ":")[1]+"\r\nContent-Type: application/json\r\n").expect(t, 403, "not allowed")
	e.raw(t, "GET /buckets HTTP/1.1\r\nHost: evil.example\r\n\r\n").expect(t, 403, "not allowed")
	if e.lim.Len() != 0 {
		t.Fatalf("a refused request created a bucket")
	}
	// The API's own origin, localhost and IP literals are served.
	post("Host: "+addr+"\r\nOrigin: http://"+addr+"\r\nContent-Type: application/json; charset=utf-8\r\n").expect(t, 201, "")
	e.raw(t, "GET /buckets HTTP/1.1\r\nHost: localhost:8090\r\n\r\n").expect(t, 200, "")
	e.raw(t, "GET /buckets HTTP/1.1\r\nHost: [::1]:8090\r\n\r\n").expect(t, 200, "")
	// /debug/pprof is off unless EQUALIZER_PPROF is set.
	e.do(t, "GET", "/debug/pprof/", "").expect(t, 404, "")
}

func TestStrictJSONBodies(t *testing.T) {
	e := start(t, "")
	f := func(method, path, body, want string) {
		t.Helper()
		e.do(t, method, path, body).expect(t, 400, want)
	}
	f("POST", "/buckets", `{"Client_ID":"a","capacity":1}`, "unknown field")
	f("POST", "/buckets", `{"client_id":"a","CAPACITY":1}`, "unknown field")
	f("POST", "/buckets", `{"client_id":"a","capacity":1,"capacity":5}`, "duplicate field")
	f("POST", "/buckets", `{"client_id":"a","client_id":"b","capacity":1}`, "duplicate field")
	f("POST", "/buckets", `{"client_id":null,"capacity":1}`, "client_id must not be null")
	f("POST", "/buckets", `{"client_id":"a","capacity":1,"tokens":null}`, "tokens must not be null")
	f("POST", "/buckets", `{"client_id":"a\ud800","capacity":1}`, "surrogate")
	f("POST", "/buckets", `{"client_id":"a\udc00b","capacity":1}`, "surrogate")
	f("POST", "/buckets", "{\"client_id\":\"a\xff\",\"capacity\":1}", "UTF-8")
	// A valid surrogate pair is a character like any other.
	e.do(t, "POST", "/buckets", `{"client_id":"emoji-\ud83d\ude00","capacity":1}`).expect(t, 201, "")
	if _, ok := e.lim.Get("emoji-😀", 0); !ok {
		t.Fatal("surrogate pair not decoded")
	}
	e.do(t, "POST", "/buckets", `{"client_id":"a","capacity":3}`).expect(t, 201, "")
	f("PUT", "/buckets/a", `{"client_id":null,"capacity":1}`, "client_id must not be null")
	f("PUT", "/buckets/a", `{"capacity":1,"capacity":2}`, "duplicate field")
	f("PATCH", "/buckets/a", `{"Tokens":1}`, "unknown field")
	if b, _ := e.lim.Get("a", 0); b.Capacity != 3 {
		t.Fatalf("a rejected write changed the bucket: %+v", b)
	}
}
