// Package route sends each request to its backend pool: an ordered table
// of routes, each a set of matchers (host, path, path prefix, methods,
// header values) compiled once from plain specs; the first route that
// matches wins. A Table is immutable, so the proxy publishes one through
// an atomic pointer and a reload swaps it whole; Match allocates nothing
// and takes no lock.
//
// Paths are matched on the normalised path (fasthttp's URI.Path: percent
// decoding, "." and ".." resolved, "//" merged), as nginx matches
// location: /v1/../admin is /admin and never matches the prefix /v1/. The
// raw request target still goes upstream unchanged, unless the route
// strips its prefix.
package route

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/limits"
	"gopher-equalizer/pool"
)

// Route is one compiled route.
type Route struct {
	// Name labels the route in metrics and the access log.
	Name string
	// Pool receives the route's requests.
	Pool *pool.Pool
	// PoolName is the name of Pool in the configuration.
	PoolName string
	// StripPrefix removes PathPrefix from the path sent upstream.
	StripPrefix bool
	// Index is the route's place in its table.
	Index int
	// Counts are the route's requests by the proxy's outcome; routes of
	// the same name share them across reloads (see Counters).
	Counts *Counts
	// Limits are charged for each request, all or none; empty: unlimited.
	Limits []*limits.Limit
	// DefaultKey: some limit keys by the proxy's client key.
	DefaultKey bool

	m matcher
}

// Match describes the route's conditions, as the status page shows them.
func (r *Route) Match() string { return r.m.describe() }

// Table is an ordered, immutable list of routes.
type Table struct {
	routes []Route
	// path: some route looks at the path (parsing it costs; a table of
	// catch-alls skips it).
	path bool
}

// NewTable builds a table; routes keep their order and get their Index.
func NewTable(routes []Route) *Table {
	t := &Table{routes: routes}
	for i := range t.routes {
		r := &t.routes[i]
		r.Index = i
		t.path = t.path || r.m.path != nil || r.m.prefix != nil
		for _, l := range r.Limits {
			r.DefaultKey = r.DefaultKey || l.Key == nil
		}
	}
	return t
}

// Routes are the table's routes, in order. The slice must not be changed.
func (t *Table) Routes() []Route { return t.routes }

// Match returns the first route that matches req, or nil.
func (t *Table) Match(req *fasthttp.Request) *Route {
	var path []byte
	if t.path {
		path = normalisedPath(req)
	}
	// Host names are compared in lower case: lower it once, on the stack.
	var buf [256]byte
	host := hostOnly(req.Header.Host())
	if len(host) <= len(buf) {
		host = lower(buf[:0], host)
	} else {
		host = nil // no DNS name is that long: only host-less routes match
	}
	for i := range t.routes {
		if t.routes[i].m.matches(req, host, path) {
			return &t.routes[i]
		}
	}
	return nil
}

// normalisedPath is the request's path as fasthttp's URI.Path normalises
// it. A target that needs no normalisation (no %, no dot segment, no //,
// no backslash: nearly every request) is used as it is, without parsing
// the URI, which would also make fasthttp render the target again when
// the request goes upstream.
func normalisedPath(req *fasthttp.Request) []byte {
	raw := req.Header.RequestURI()
	if len(raw) == 0 || raw[0] != '/' {
		return req.URI().Path() // absolute form, or *
	}
	end := len(raw)
	if i := bytes.IndexAny(raw, "?#"); i >= 0 {
		end = i
	}
	p := raw[:end]
	if bytes.IndexByte(p, '%') >= 0 || bytes.IndexByte(p, '\\') >= 0 || bytes.Contains(p, dotSegment) || bytes.Contains(p, doubleSlash) {
		return req.URI().Path()
	}
	return p
}

var (
	dotSegment  = []byte("/.")
	doubleSlash = []byte("//")
)

// UpstreamPath is the path the route sends upstream for the normalised
// path p: p without the route's prefix when it strips it (at least "/"),
// else nil (the raw target goes as it came). With a prefix ending in "/"
// (the usual /v1/) it is a slice of p.
func (r *Route) UpstreamPath(p []byte) []byte {
	prefix := r.m.prefix
	if !r.StripPrefix || prefix == nil {
		return nil
	}
	if prefix[len(prefix)-1] == '/' {
		return p[len(prefix)-1:]
	}
	switch rest := p[len(prefix):]; {
	case len(rest) == 0:
		return slash
	case rest[0] == '/':
		return rest
	default: // prefix /v1 and path /v1x: not a segment boundary
		return append([]byte{'/'}, rest...)
	}
}

var slash = []byte("/")

func lower(dst, s []byte) []byte {
	for _, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// hostOnly drops the port of a Host value ("[::1]:80" keeps its brackets).
func hostOnly(h []byte) []byte {
	i := bytes.LastIndexByte(h, ':')
	if i < 0 || bytes.IndexByte(h[i:], ']') >= 0 {
		return h
	}
	return h[:i]
}
