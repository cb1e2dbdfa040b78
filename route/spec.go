package route

import (
	"fmt"
	"net/url"
	"path"
	"strings"

	"gopher-equalizer/limits"
	"gopher-equalizer/pool"
)

// Spec is a route as the configuration writes it.
type Spec struct {
	Name        string
	Match       MatchSpec
	Pool        string // empty: "default"
	StripPrefix bool
	// Limits names the limits charged; nil (not written): the limit
	// "default"; empty: none.
	Limits []string
}

// MaxLimits is the most limits one route may charge.
const MaxLimits = 8

// MatchSpec holds a route's conditions; empty ones match anything.
type MatchSpec struct {
	Host       string // exact, or *.example.com for its subdomains at any depth
	Path       string // exact normalised path
	PathPrefix string
	Methods    []string
	Headers    map[string]string
}

// DefaultPool is the pool of the top-level settings, and of a route that
// names none.
const DefaultPool = "default"

// CatchAll is the table of a configuration without routes: every request
// goes to p, charged to def (nil: unlimited).
func CatchAll(p *pool.Pool, def *limits.Limit) *Table {
	r := Route{Name: "default", Pool: p, PoolName: DefaultPool}
	if def != nil {
		r.Limits = []*limits.Limit{def}
	}
	return NewTable([]Route{r})
}

// Compile checks specs and builds their table over pools and limits (the
// limit "default" included when limiting is on). An error names its place
// (routes[2].pool: no pool "apii"). warnings name routes that can never
// match because an earlier one catches everything they would.
func Compile(specs []Spec, pools map[string]*pool.Pool, lims map[string]*limits.Limit) (t *Table, warnings []string, err error) {
	routes := make([]Route, 0, len(specs))
	names := map[string]int{}
	for i, s := range specs {
		at := fmt.Sprintf("routes[%d]", i)
		name := s.Name
		if name == "" {
			name = fmt.Sprintf("route%d", i)
		} else if err := CheckName(name); err != nil {
			return nil, nil, fmt.Errorf("%s.name: %v", at, err)
		}
		if j, dup := names[name]; dup {
			return nil, nil, fmt.Errorf("%s.name: %q is also the name of routes[%d]", at, name, j)
		}
		names[name] = i
		poolName := s.Pool
		if poolName == "" {
			poolName = DefaultPool
		}
		p, ok := pools[poolName]
		if !ok {
			return nil, nil, fmt.Errorf("%s.pool: no pool %q", at, poolName)
		}
		m, err := compileMatch(s.Match)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.match.%v", at, err)
		}
		if s.StripPrefix && m.prefix == nil {
			return nil, nil, fmt.Errorf("%s.strip_prefix: the route has no match.path_prefix to strip", at)
		}
		charged, err := routeLimits(at, s.Limits, lims)
		if err != nil {
			return nil, nil, err
		}
		for j := range routes {
			if routes[j].m.covers(&m) {
				warnings = append(warnings, fmt.Sprintf("%s (%q) can never match: routes[%d] (%q) comes first and matches everything it would", at, name, j, routes[j].Name))
				break
			}
		}
		routes = append(routes, Route{Name: name, Pool: p, PoolName: poolName, StripPrefix: s.StripPrefix, Limits: charged, m: m})
	}
	return NewTable(routes), warnings, nil
}

// routeLimits resolves a route's limit names (nil: "default").
func routeLimits(at string, names []string, lims map[string]*limits.Limit) ([]*limits.Limit, error) {
	if names == nil {
		if def, ok := lims["default"]; ok && def != nil {
			return []*limits.Limit{def}, nil
		}
		return nil, nil
	}
	if len(names) > MaxLimits {
		return nil, fmt.Errorf("%s.limits: %d limits; a route charges at most %d", at, len(names), MaxLimits)
	}
	out := []*limits.Limit{}
	seen := map[string]bool{}
	for j, name := range names {
		l, ok := lims[name]
		switch {
		case !ok:
			return nil, fmt.Errorf("%s.limits[%d]: no limit %q", at, j, name)
		case seen[name]:
			return nil, fmt.Errorf("%s.limits[%d]: %q is listed twice", at, j, name)
		}
		seen[name] = true
		if l != nil { // nil while only checking, or with limiting off
			out = append(out, l)
		}
	}
	return out, nil
}

// CheckName keeps route, pool and limit names usable as metric labels
// and in URLs.
func CheckName(name string) error {
	if len(name) > 64 {
		return fmt.Errorf("%q is longer than 64 bytes", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%q: use letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

func compileMatch(s MatchSpec) (matcher, error) {
	var m matcher
	switch h := strings.ToLower(s.Host); {
	case h == "":
	case strings.HasPrefix(h, "*."):
		if err := checkHost(h[2:]); err != nil {
			return m, fmt.Errorf("host: %q: %v", s.Host, err)
		}
		m.wildcard = []byte(h[1:])
	default:
		if err := checkHost(h); err != nil {
			return m, fmt.Errorf("host: %q: %v", s.Host, err)
		}
		m.host = []byte(h)
	}
	var err error
	if m.path, err = compilePath("path", s.Path); err != nil {
		return m, err
	}
	if m.prefix, err = compilePath("path_prefix", s.PathPrefix); err != nil {
		return m, err
	}
	if m.path != nil && m.prefix != nil {
		return m, fmt.Errorf("path_prefix: a route has path or path_prefix, not both")
	}
	for i, method := range s.Methods {
		if method == "" || strings.ToUpper(method) != method || strings.ContainsAny(method, " \t/") {
			return m, fmt.Errorf("methods[%d]: %q is not a method (write them in upper case: GET, POST)", i, method)
		}
		m.methods = append(m.methods, []byte(method))
	}
	for name, value := range s.Headers {
		if !limits.ValidHeaderName(name) {
			return m, fmt.Errorf("headers: %q is not a header name", name)
		}
		m.headers = append(m.headers, header{name: []byte(name), value: []byte(value)})
	}
	return m, nil
}

// checkHost accepts a DNS name or an IP address, without a port.
func checkHost(h string) error {
	if h == "" || strings.ContainsAny(h, "*/: ") && !strings.HasPrefix(h, "[") {
		return fmt.Errorf("want a host name such as api.example.com or *.example.com, without a port")
	}
	for _, label := range strings.Split(strings.Trim(h, "[]"), ".") {
		if label == "" && !strings.HasPrefix(h, "[") {
			return fmt.Errorf("empty label")
		}
	}
	return nil
}

// compilePath checks that p is a normalised absolute path: requests are
// matched after normalisation, so a pattern that is not one could never
// match.
func compilePath(field, p string) ([]byte, error) {
	if p == "" {
		return nil, nil
	}
	decoded, err := url.PathUnescape(p)
	if err != nil || decoded != p {
		return nil, fmt.Errorf("%s: %q: write the path decoded (requests are matched after %%XX decoding)", field, p)
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	if !strings.HasPrefix(p, "/") || clean != p {
		return nil, fmt.Errorf("%s: %q: want a normalised absolute path such as /v1/ (no . or .. segments, no //)", field, p)
	}
	return []byte(p), nil
}

// covers reports whether every request b matches also matches m.
func (m *matcher) covers(b *matcher) bool {
	switch {
	case m.host != nil && string(m.host) != string(b.host):
		return false
	case m.wildcard != nil && !(b.host != nil && hasSuffixFold(b.host, m.wildcard) ||
		b.wildcard != nil && strings.HasSuffix(string(b.wildcard), string(m.wildcard))):
		return false
	case m.path != nil && string(m.path) != string(b.path):
		return false
	case m.prefix != nil && !(b.path != nil && strings.HasPrefix(string(b.path), string(m.prefix)) ||
		b.prefix != nil && strings.HasPrefix(string(b.prefix), string(m.prefix))):
		return false
	}
	if m.methods != nil {
		if b.methods == nil {
			return false
		}
		for _, x := range b.methods {
			if !m.method(x) {
				return false
			}
		}
	}
	for _, h := range m.headers {
		found := false
		for _, g := range b.headers {
			found = found || strings.EqualFold(string(h.name), string(g.name)) && string(h.value) == string(g.value)
		}
		if !found {
			return false
		}
	}
	return true
}
