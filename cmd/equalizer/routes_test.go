package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// namedBackend answers "<name> <request target>" to every request.
func namedBackend(t *testing.T, name string) string {
	return startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(name + " " + string(ctx.Request.Header.RequestURI()))
	})
}

// rawGet sends one request with an exact target and host and returns the
// status and body.
func rawGet(t *testing.T, addr, method, target, host string, headers ...string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, host)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	if method == "POST" {
		b.WriteString("Content-Length: 0\r\n")
	}
	b.WriteString("\r\n")
	c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

const routesFile = `
backends: [http://%s]
health_interval: 200ms
trusted_proxies: [127.0.0.1/32]
pools:
  api:
    backends: [http://%s]
    strategy: least_conn
    health_interval: 200ms
  static:
    backends: [http://%s]
    health_interval: 200ms
routes:
  - name: api
    match: {host: api.example.com, path_prefix: /v1/}
    pool: api
  - name: tenants
    match: {host: "*.tenants.example.com"}
    pool: api
  - name: static
    match: {path_prefix: /static/}
    pool: static
    strip_prefix: true
  - name: login
    match: {path: /login, methods: [POST]}
  - name: beta
    match: {host: www.example.com, headers: {X-Beta: "on"}}
    pool: api
  - name: www
    match: {host: www.example.com}
deny: [203.0.113.0/24]
`

// TestRoutesSendEachHostAndPathToItsPool: two hosts and three path
// prefixes to three pools; each pool's backend sees only its traffic;
// strip_prefix; 404 for no route; dot segments, %2e%2e, // and %2f never
// reach a pool their prefix would not allow; deny behind a trusted proxy.
func TestRoutesSendEachHostAndPathToItsPool(t *testing.T) {
	def, api, static := namedBackend(t, "default"), namedBackend(t, "api"), namedBackend(t, "static")
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(routesFile, strings.TrimPrefix(def, "http://"), strings.TrimPrefix(api, "http://"), strings.TrimPrefix(static, "http://")))
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file, "EQUALIZER_CLIENT_KEY": "ip"})
	f := func(method, target, host string, wantStatus int, wantBody string, headers ...string) {
		t.Helper()
		status, body := rawGet(t, in.proxy, method, target, host, headers...)
		if status != wantStatus || (wantBody != "" && body != wantBody) {
			t.Errorf("%s %s (Host %s): %d %q, want %d %q", method, target, host, status, body, wantStatus, wantBody)
		}
	}
	f("GET", "/v1/users?page=2", "api.example.com", 200, "api /v1/users?page=2")
	f("GET", "/v1/users", "API.example.com:8080", 200, "api /v1/users")
	f("GET", "/", "a.b.tenants.example.com", 200, "api /")
	f("GET", "/static/app.js?v=3", "www.example.com", 200, "static /app.js?v=3")
	f("GET", "/static/", "shop.test", 200, "static /")
	f("POST", "/login", "shop.test", 200, "default /login")
	f("GET", "/login", "shop.test", 404, "")
	f("GET", "/anything", "www.example.com", 200, "default /anything")
	f("GET", "/anything", "www.example.com", 200, "api /anything", "x-beta", "on")
	f("GET", "/v2/users", "api.example.com", 404, "")
	f("GET", "/", "tenants.example.com", 404, "") // *.suffix is subdomains only
	// Normalised before matching: what reaches the api pool is under /v1/.
	f("GET", "/v1/../admin", "api.example.com", 404, "")
	f("GET", "/v1/%2e%2e/admin", "api.example.com", 404, "")
	f("GET", "/v1/..%2fadmin", "api.example.com", 404, "")
	f("GET", "/v1/users/../../admin", "api.example.com", 404, "")
	f("GET", "//v1//users", "api.example.com", 200, "api //v1//users")
	f("GET", "/v1%2fusers", "api.example.com", 200, "api /v1%2fusers")
	f("GET", "/static/..%2fsecret", "shop.test", 404, "")
	f("GET", "/static/%2e%2e/login", "shop.test", 404, "")
	f("GET", "/%73tatic/a", "shop.test", 200, "static /a")
	// deny: the real client address, also behind a trusted proxy.
	f("GET", "/anything", "www.example.com", 403, "", "X-Forwarded-For", "203.0.113.9")
	f("GET", "/anything", "www.example.com", 200, "default /anything", "X-Forwarded-For", "198.51.100.9")
	f("GET", "/anything", "www.example.com", 403, "", "X-Forwarded-For", "::ffff:203.0.113.9")

	m, _ := in.scrape(t)
	if m[`equalizer_route_requests_total{outcome="forwarded",route="api"}`] != 4 || m[`equalizer_requests_total{outcome="no_route"}`] != 9 ||
		m[`equalizer_requests_total{outcome="denied"}`] != 2 || m[`equalizer_backend_pool{backend="`+api+`",pool="api"}`] != 1 {
		t.Errorf("metrics: api forwarded %v, no_route %v, denied %v, backend_pool %v", m[`equalizer_route_requests_total{outcome="forwarded",route="api"}`],
			m[`equalizer_requests_total{outcome="no_route"}`], m[`equalizer_requests_total{outcome="denied"}`], m[`equalizer_backend_pool{backend="`+api+`",pool="api"}`])
	}
	// The status page's data lists the routes in order, with their pool.
	if code, body := in.adminCall(t, "GET", "/status", ""); code != 200 ||
		!contains(body, `"routes":[{"name":"api","match":"host=api.example.com path_prefix=/v1/","pool":"api","strip_prefix":false,"requests":4,"forwarded":4`) ||
		!contains(body, `{"name":"static","match":"path_prefix=/static/","pool":"static","strip_prefix":true`) ||
		!contains(body, `"pool":"static","url":"`+static+`"`) {
		t.Errorf("/status: %d %s", code, body)
	}
	in.stop(t, syscall.SIGTERM)
}

// TestRoutingMistakesStopStartUp: one line naming the place, exit code 2.
func TestRoutingMistakesStopStartUp(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct{ body, want string }{
		{"routes:\n  - match: {pathprefix: /v1/}\n", "routes[0].match.pathprefix: unknown key"},
		{"routes:\n  - match: {}\n  - match: {}\n    pool: apii\n", `routes[1].pool: no pool "apii"`},
		{"pools:\n  api: {backends: [\"http://127.0.0.1:1\"]}\nroutes:\n  - {name: a, match: {}}\n  - {name: a, match: {}}\n", `routes[1].name: "a" is also the name of routes[0]`},
		{"routes:\n  - match: {host: \"api.*.com\"}\n", `routes[0].match.host: "api.*.com"`},
		{"pools:\n  api: {backends: [\"http://127.0.0.1:1\"], strategy: fastest}\n", `pools.api.strategy`},
		{"pools:\n  api: {backend: [\"http://127.0.0.1:1\"]}\n", `pools.api.backends: missing`},
		{"deny: [10.0.0.0/33]\n", `deny[0]: "10.0.0.0/33"`},
	} {
		file := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
		writeFile(t, file, c.body)
		cmd := newCmd(t, map[string]string{"EQUALIZER_CONFIG_FILE": file, "EQUALIZER_LISTEN": freeAddr(t), "EQUALIZER_ADMIN_LISTEN": freeAddr(t)})
		out, err := cmd.CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if code := cmd.ProcessState.ExitCode(); code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("%q: exit %d (%v), output %q, want one line with %q", c.body, code, err, out, c.want)
		}
	}
}

// TestSIGHUPChangesRoutesUnderLoad: a reload that adds a route and removes
// a pool while requests flow: none fails, the new route answers, and the
// removed pool's path is then a 404.
func TestSIGHUPChangesRoutesUnderLoad(t *testing.T) {
	def, api, static := namedBackend(t, "default"), namedBackend(t, "api"), namedBackend(t, "static")
	hp := func(u string) string { return strings.TrimPrefix(u, "http://") }
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(routesFile, hp(def), hp(api), hp(static)))
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file, "EQUALIZER_BUCKET_CAPACITY": "1000000", "EQUALIZER_BUCKET_REFILL_AMOUNT": "1000000"})
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			client := &fasthttp.HostClient{Addr: in.proxy, MaxConns: 1}
			for {
				select {
				case <-stop:
					return
				default:
				}
				var req fasthttp.Request
				var resp fasthttp.Response
				req.UseHostHeader = true
				req.SetRequestURI("http://" + in.proxy + "/v1/x")
				req.Header.SetHost("api.example.com")
				if w%2 == 1 {
					req.SetRequestURI("http://" + in.proxy + "/x")
					req.Header.SetHost("www.example.com")
				}
				sent.Add(1)
				if err := client.DoTimeout(&req, &resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
					failed.Add(1)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	next := strings.Replace(fmt.Sprintf(routesFile, hp(def), hp(api), hp(static)), `  static:
    backends: [http://`+hp(static)+`]
    health_interval: 200ms
`, "", 1)
	next = strings.Replace(next, `  - name: static
    match: {path_prefix: /static/}
    pool: static
    strip_prefix: true
`, `  - name: docs
    match: {path_prefix: /docs/}
`, 1)
	// The api pool also takes the default pool's backend: one URL in two
	// pools (its series must still be unique on /metrics).
	next = strings.Replace(next, "    backends: [http://"+hp(api)+"]", "    backends: [http://"+hp(api)+", http://"+hp(def)+"]", 1)
	writeFile(t, file, next)
	in.cmd.Process.Signal(syscall.SIGHUP) //nolint:errcheck
	waitFor(t, "the new route", func() bool { s, _ := rawGet(t, in.proxy, "GET", "/docs/a", "shop.test"); return s == 200 })
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || sent.Load() < 100 {
		t.Fatalf("%d of %d requests failed across the reload", failed.Load(), sent.Load())
	}
	if s, _ := rawGet(t, in.proxy, "GET", "/static/a", "shop.test"); s != 404 {
		t.Fatalf("the removed pool's route: %d, want 404", s)
	}
	if m, _ := in.scrape(t); m[`equalizer_backend_pool{backend="`+def+`",pool="api"}`] != 1 {
		t.Fatal("the default pool's backend is not listed in the api pool after the reload")
	}
	t.Logf("%d requests across the reload, none failed", sent.Load())
	in.stop(t, syscall.SIGTERM)
}

// startNginx runs nginx with the http block body and returns when it
// listens on addr.
func startNginx(t *testing.T, addr, httpBody string) {
	t.Helper()
	bin := requireTool(t, "nginx")
	dir := t.TempDir()
	conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr crit;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, httpBody)
	writeFile(t, filepath.Join(dir, "nginx.conf"), conf)
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;", "-e", "stderr")
	out := &strings.Builder{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGTERM: the master stops its workers too (SIGKILL would leave
	// them holding stderr, and Wait would never return).
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }) //nolint:errcheck
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not start: %s", out)
		}
	}
}

// TestRoutingMatchesNginx sends the same requests, tricky paths included,
// to nginx (server_name + location) and to us (the same routes), and
// compares which pool answered and what path it saw. The one difference
// is listed: a path that climbs above the root.
func TestRoutingMatchesNginx(t *testing.T) {
	api, static := namedBackend(t, "api"), namedBackend(t, "static")
	hp := func(u string) string { return strings.TrimPrefix(u, "http://") }
	ngx := freeAddr(t)
	startNginx(t, ngx, fmt.Sprintf(`
  server {
    listen %[1]s;
    server_name api.example.com;
    location /v1/ { proxy_pass http://%[2]s; }
    location / { return 404; }
  }
  server {
    listen %[1]s default_server;
    server_name _;
    location /static/ { proxy_pass http://%[3]s/; }
    location / { return 404; }
  }`, ngx, hp(api), hp(static)))
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(`backends: [http://%s]
pools:
  api: {backends: ["http://%s"]}
  static: {backends: ["http://%s"]}
routes:
  - {name: api, match: {host: api.example.com, path_prefix: /v1/}, pool: api}
  - {name: static, match: {path_prefix: /static/}, pool: static, strip_prefix: true}
`, hp(api), hp(api), hp(static)))
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})
	// Where we differ from nginx, and what we answer instead:
	//  - a path that climbs above the root: nginx refuses it with 400;
	//    fasthttp's normalisation removes the extra ".." at the root, as
	//    RFC 3986 5.2.4 does, and routes the path it ends at;
	//  - the prefix without its slash: nginx redirects /static to
	//    /static/ (301) for a prefix location with proxy_pass; no route
	//    matches here (404).
	differ := map[string]string{
		"/v1/../../admin":        "404 ",
		"/static/../../static/a": "200 static /a",
		"/static":                "404 ",
	}
	for _, c := range []struct{ host, target string }{
		{"api.example.com", "/v1/users?page=2"},
		{"api.example.com", "/v1/../admin"},
		{"api.example.com", "/v1/%2e%2e/admin"},
		{"api.example.com", "/v1/..%2fadmin"},
		{"api.example.com", "/v1/users/../../admin"},
		{"api.example.com", "/v1/../../admin"},
		{"api.example.com", "//v1//users"},
		{"api.example.com", "/v1%2fusers"},
		{"api.example.com", "/v1/./users"},
		{"api.example.com", "/V1/users"},
		{"API.EXAMPLE.COM:80", "/v1/x"},
		{"www.example.com", "/v1/users"},
		{"shop.test", "/static/app.js?v=1"},
		{"shop.test", "/static/..%2fsecret"},
		{"shop.test", "/static/%2e%2e/x"},
		{"shop.test", "/%73tatic/a"},
		{"shop.test", "/static//a//b"},
		{"shop.test", "/static/a%20b"},
		{"shop.test", "/static/%e2%82%ac?q=%20"},
		{"shop.test", "/static/../../static/a"},
		{"shop.test", "/static"},
	} {
		ns, nb := rawGet(t, ngx, "GET", c.target, c.host)
		es, eb := rawGet(t, in.proxy, "GET", c.target, c.host)
		if ns != 200 {
			nb = ""
		}
		if es != 200 {
			eb = ""
		}
		t.Logf("%-18s %-26s nginx %d %-26q equalizer %d %q", c.host, c.target, ns, nb, es, eb)
		want, known := differ[c.target]
		switch got := fmt.Sprintf("%d %s", es, eb); {
		case known && got != want:
			t.Errorf("%s %s: equalizer %s, want %s", c.host, c.target, got, want)
		case !known && (ns != es || nb != eb):
			t.Errorf("%s %s: nginx %d %q, equalizer %d %q", c.host, c.target, ns, nb, es, eb)
		}
	}
	in.stop(t, syscall.SIGTERM)
}

// TestPoolBackendChangesReachEveryInstance: /pools lists every pool; a
// backend added to a named pool through /pools/{name}/backends on one
// instance reaches that pool (and only it) on the other, survives a
// restart, and takes the route's traffic.
func TestPoolBackendChangesReachEveryInstance(t *testing.T) {
	def, api, extra := namedBackend(t, "default"), namedBackend(t, "api"), namedBackend(t, "extra")
	hp := func(u string) string { return strings.TrimPrefix(u, "http://") }
	_, env, _ := startShared(t, 0, "100", "100")
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(`backends: ["%s"]
pools:
  api: {backends: ["%s"]}
routes:
  - {name: api, match: {path_prefix: /v1/}, pool: api}
  - {name: rest, match: {}}
`, def, api))
	env["EQUALIZER_CONFIG_FILE"] = file
	delete(env, "EQUALIZER_BACKENDS")
	a, b := startInstanceOf(t, plainBinary(t), env), startInstanceOf(t, plainBinary(t), env)
	if code, body := a.adminCall(t, "GET", "/pools", ""); code != 200 || !contains(body, `"name":"default"`) || !contains(body, `"name":"api","strategy":"round_robin"`) {
		t.Fatalf("GET /pools: %d %s", code, body)
	}
	if code, _ := a.adminCall(t, "GET", "/pools/nope/backends", ""); code != 404 {
		t.Fatalf("unknown pool: %d", code)
	}
	code, body := a.adminCall(t, "POST", "/pools/api/backends", `{"url":"`+extra+`","weight":2}`)
	if code != 201 || !contains(body, `"weight":2`) {
		t.Fatalf("POST /pools/api/backends: %d %s", code, body)
	}
	seen := func(in *instance, path, want string, present bool) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			_, body := in.adminCall(t, "GET", path, "")
			if contains(body, want) == present {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on %s: %s", path, in.admin, body)
			}
		}
	}
	seen(b, "/pools/api/backends", `"id":"`+hp(extra)+`"`, true)
	seen(b, "/backends", hp(extra), false) // not in the default pool
	// b's api route now spreads over api and extra.
	answered := map[string]bool{}
	for range 9 {
		_, body := rawGet(t, b.proxy, "GET", "/v1/x", "shop.test")
		answered[strings.Fields(body)[0]] = true
	}
	if !answered["api"] || !answered["extra"] || answered["default"] {
		t.Fatalf("the api route answered from %v", answered)
	}
	b.stop(t, syscall.SIGTERM)
	b = startInstanceOf(t, plainBinary(t), env)
	seen(b, "/pools/api/backends", `"id":"`+hp(extra)+`","url":"`+extra+`","weight":2`, true)
	if code, _ := b.adminCall(t, "DELETE", "/pools/api/backends/"+hp(extra), ""); code != 202 {
		t.Fatal("DELETE")
	}
	seen(a, "/pools/api/backends", hp(extra), false)
	a.stop(t, syscall.SIGTERM)
	b.stop(t, syscall.SIGTERM)
}
