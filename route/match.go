package route

import (
	"bytes"
	"sort"
	"strings"

	"github.com/valyala/fasthttp"
)

// matcher is one route's compiled conditions; nil fields match anything.
type matcher struct {
	host     []byte // exact host, lower case
	wildcard []byte // ".example.com" for *.example.com: subdomains only
	path     []byte // exact normalised path
	prefix   []byte // normalised path prefix
	methods  [][]byte
	headers  []header
}

type header struct {
	name  []byte // compared case-insensitively
	value []byte // exact
}

// matches: host is in lower case, path normalised.
func (m *matcher) matches(req *fasthttp.Request, host, path []byte) bool {
	switch {
	case m.host != nil && !bytes.Equal(host, m.host):
		return false
	case m.wildcard != nil && (len(host) <= len(m.wildcard) || !bytes.HasSuffix(host, m.wildcard)):
		return false
	case m.path != nil && !bytes.Equal(path, m.path):
		return false
	case m.prefix != nil && !bytes.HasPrefix(path, m.prefix):
		return false
	}
	if m.methods != nil && !m.method(req.Header.Method()) {
		return false
	}
	for i := range m.headers {
		if !hasHeader(&req.Header, &m.headers[i]) {
			return false
		}
	}
	return true
}

func (m *matcher) method(got []byte) bool {
	for _, want := range m.methods {
		if bytes.Equal(got, want) {
			return true
		}
	}
	return false
}

// hasHeader reports whether some line of the header named h.name (in any
// case) has exactly h.value. The proxy keeps header names as sent, so a
// plain Peek would miss other spellings.
func hasHeader(rh *fasthttp.RequestHeader, h *header) bool {
	for name, value := range rh.All() {
		if bytes.EqualFold(name, h.name) && bytes.Equal(value, h.value) {
			return true
		}
	}
	return false
}

// hasSuffixFold reports whether host ends with suffix (".example.com") in
// any case and has at least one label before it.
func hasSuffixFold(host, suffix []byte) bool {
	return len(host) > len(suffix) && bytes.EqualFold(host[len(host)-len(suffix):], suffix)
}

// describe renders the conditions as the configuration writes them, for
// the status page: "host=api.example.com path_prefix=/v1/ methods=GET,POST".
func (m *matcher) describe() string {
	var parts []string
	add := func(k string, v []byte) {
		if v != nil {
			parts = append(parts, k+"="+string(v))
		}
	}
	add("host", m.host)
	if m.wildcard != nil {
		parts = append(parts, "host=*"+string(m.wildcard))
	}
	add("path", m.path)
	add("path_prefix", m.prefix)
	if m.methods != nil {
		ms := make([]string, len(m.methods))
		for i, x := range m.methods {
			ms[i] = string(x)
		}
		parts = append(parts, "methods="+strings.Join(ms, ","))
	}
	var hs []string
	for _, h := range m.headers {
		hs = append(hs, "header "+string(h.name)+"="+string(h.value))
	}
	sort.Strings(hs)
	parts = append(parts, hs...)
	if len(parts) == 0 {
		return "everything"
	}
	return strings.Join(parts, " ")
}
