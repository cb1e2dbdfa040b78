package route

import (
	"bufio"
	"fmt"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/pool"
)

// request parses a raw request head as the server does.
func request(t testing.TB, method, target, host string, headers ...string) *fasthttp.Request {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, host)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	b.WriteString("\r\n")
	req := &fasthttp.Request{}
	req.Header.DisableNormalizing()
	if err := req.Read(bufio.NewReader(strings.NewReader(b.String()))); err != nil {
		t.Fatal(err)
	}
	return req
}

func pools() map[string]*pool.Pool {
	return map[string]*pool.Pool{"default": pool.New(nil, nil), "api": pool.New(nil, nil), "static": pool.New(nil, nil)}
}

func TestMatchFirstWins(t *testing.T) {
	table, warnings, err := Compile([]Spec{
		{Name: "api", Match: MatchSpec{Host: "api.example.com", PathPrefix: "/v1/", Methods: []string{"GET", "POST"}}, Pool: "api"},
		{Name: "tenants", Match: MatchSpec{Host: "*.example.com"}, Pool: "api"},
		{Name: "login", Match: MatchSpec{Path: "/login", Methods: []string{"POST"}}},
		{Name: "static", Match: MatchSpec{PathPrefix: "/static/"}, Pool: "static", StripPrefix: true},
		{Name: "beta", Match: MatchSpec{Headers: map[string]string{"X-Beta": "on"}}, Pool: "api"},
		{Name: "rest", Match: MatchSpec{PathPrefix: "/"}},
	}, pools(), nil)
	if err != nil || len(warnings) != 0 {
		t.Fatal(err, warnings)
	}
	f := func(want string, req *fasthttp.Request) {
		t.Helper()
		got := "none"
		if r := table.Match(req); r != nil {
			got = r.Name
		}
		if got != want {
			t.Errorf("%s %s (host %s): route %s, want %s", req.Header.Method(), req.Header.RequestURI(), req.Header.Host(), got, want)
		}
	}
	f("api", request(t, "GET", "/v1/users?x=1", "api.example.com"))
	f("api", request(t, "POST", "/v1/users", "API.Example.COM:8443"))
	f("tenants", request(t, "DELETE", "/v1/users", "api.example.com")) // method not in api's list
	f("tenants", request(t, "GET", "/", "a.b.example.com"))
	f("rest", request(t, "GET", "/", "example.com")) // *.example.com is subdomains only, as in nginx
	f("login", request(t, "POST", "/login", "shop.test"))
	f("rest", request(t, "GET", "/login", "shop.test"))
	f("rest", request(t, "POST", "/login/", "shop.test"))
	f("static", request(t, "GET", "/static/app.js", "shop.test"))
	f("beta", request(t, "GET", "/x", "shop.test", "x-beta", "on"))
	f("rest", request(t, "GET", "/x", "shop.test", "X-Beta", "On"))
	// Normalised paths: what a prefix allows is what the backend will see.
	f("api", request(t, "GET", "/v1/../v1/users", "api.example.com"))
	f("tenants", request(t, "GET", "/v1/../admin", "api.example.com"))
	f("tenants", request(t, "GET", "/v1/%2e%2e/admin", "api.example.com"))
	f("tenants", request(t, "GET", "/v1/..%2fadmin", "api.example.com"))
	f("api", request(t, "GET", "//v1//users", "api.example.com"))
	f("api", request(t, "GET", "/v1%2fusers", "api.example.com"))
	f("rest", request(t, "GET", "/static/../secret", "shop.test"))
	f("static", request(t, "GET", "/%73tatic/a", "shop.test"))
}

func TestNoRouteMatches(t *testing.T) {
	table, _, err := Compile([]Spec{{Match: MatchSpec{Host: "a.test"}}}, pools(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := table.Match(request(t, "GET", "/", "b.test")); r != nil {
		t.Fatalf("matched %s", r.Name)
	}
}

func TestUpstreamPath(t *testing.T) {
	f := func(prefix, path, want string) {
		t.Helper()
		table, _, err := Compile([]Spec{{Match: MatchSpec{PathPrefix: prefix}, StripPrefix: true}}, pools(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(table.Routes()[0].UpstreamPath([]byte(path))); got != want {
			t.Errorf("strip %s from %s: %q, want %q", prefix, path, got, want)
		}
	}
	f("/static/", "/static/app.js", "/app.js")
	f("/static/", "/static/", "/")
	f("/api", "/api", "/")
	f("/api", "/api/users", "/users")
	f("/api", "/apix", "/x")
}

func TestCompileErrorsNameThePlace(t *testing.T) {
	f := func(want string, specs ...Spec) {
		t.Helper()
		_, _, err := Compile(specs, pools(), nil)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v, want an error starting %q", err, want)
		}
	}
	ok := Spec{Match: MatchSpec{PathPrefix: "/"}}
	f(`routes[2].pool: no pool "apii"`, ok, ok, Spec{Pool: "apii"})
	f(`routes[1].name: "a" is also the name of routes[0]`, Spec{Name: "a"}, Spec{Name: "a"})
	f(`routes[0].name:`, Spec{Name: "a b"})
	f(`routes[0].match.host: "api.example.com:80"`, Spec{Match: MatchSpec{Host: "api.example.com:80"}})
	f(`routes[0].match.host: "*.*.example.com"`, Spec{Match: MatchSpec{Host: "*.*.example.com"}})
	f(`routes[0].match.host: "api..example.com"`, Spec{Match: MatchSpec{Host: "api..example.com"}})
	f(`routes[0].match.path_prefix: "v1/"`, Spec{Match: MatchSpec{PathPrefix: "v1/"}})
	f(`routes[0].match.path_prefix: "/v1/../admin/"`, Spec{Match: MatchSpec{PathPrefix: "/v1/../admin/"}})
	f(`routes[0].match.path: "/a%2fb"`, Spec{Match: MatchSpec{Path: "/a%2fb"}})
	f(`routes[0].match.methods[1]: "post"`, Spec{Match: MatchSpec{Methods: []string{"GET", "post"}}})
	f(`routes[0].match.headers: "X A"`, Spec{Match: MatchSpec{Headers: map[string]string{"X A": "1"}}})
	f(`routes[0].strip_prefix:`, Spec{StripPrefix: true})
}

func TestShadowedRoutesWarn(t *testing.T) {
	_, warnings, err := Compile([]Spec{
		{Name: "v1", Match: MatchSpec{PathPrefix: "/v1/"}},
		{Name: "users", Match: MatchSpec{PathPrefix: "/v1/users/", Methods: []string{"GET"}}},
		{Name: "all", Match: MatchSpec{}},
		{Name: "late", Match: MatchSpec{Host: "a.test"}},
	}, pools(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], `routes[1] ("users")`) || !strings.Contains(warnings[1], `routes[3] ("late")`) {
		t.Fatalf("warnings %q", warnings)
	}
}

// TestNormalisedPathAgreesWithFasthttp: the path matched without parsing
// the URI is the one fasthttp's normalisation gives, for every target.
func TestNormalisedPathAgreesWithFasthttp(t *testing.T) {
	for _, target := range []string{
		"/", "/a/b", "/a/b/", "/a/b?x=/../y", "/a.b/c.d", "/a/b#frag", "/v1/users?q=%2f",
		"/.well-known/x", "/a/./b", "/a/../b", "/a//b", "/a/%2e%2e/b", "/a%2fb", "/a\\b", "/a/..", "/a/.",
		"http://h.test/a/../b?x", "/a+b", "/~user/", "/a;b/c",
	} {
		got := string(normalisedPath(request(t, "GET", target, "h.test")))
		want := string(request(t, "GET", target, "h.test").URI().Path())
		if got != want {
			t.Errorf("%s: %q, fasthttp normalises it to %q", target, got, want)
		}
	}
}
