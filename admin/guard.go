package admin

import (
	"bytes"
	"crypto/subtle"
	"net"
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// The admin API changes limits, so a browser must not be usable against it:
//
//   - DNS rebinding: a page of evil.example whose name now resolves to
//     127.0.0.1 sends requests with Host: evil.example. Only hosts that are
//     IP literals (rebinding needs a name), localhost, or listed in
//     EQUALIZER_ADMIN_HOSTS are served.
//   - Cross-site requests: a form or fetch from another origin carries an
//     Origin header; only the API's own origin is served.
//   - "Simple" cross-origin POSTs (text/plain, no preflight): every write
//     must say Content-Type: application/json.

// guard refuses requests with a foreign Host or Origin (403).
func (a *API) guard(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		host := ctx.Request.Header.Host()
		if !a.hostAllowed(string(host)) {
			writeError(ctx, fasthttp.StatusForbidden, "host "+strconsQuote(host)+" is not allowed: add it to EQUALIZER_ADMIN_HOSTS")
			return
		}
		if origin := ctx.Request.Header.Peek("Origin"); origin != nil && !sameOrigin(origin, host) {
			writeError(ctx, fasthttp.StatusForbidden, "cross-origin requests are not allowed")
			return
		}
		next(ctx)
	}
}

func strconsQuote(b []byte) string { return `"` + strings.ReplaceAll(string(b), `"`, `\"`) + `"` }

// hostAllowed reports whether a Host header value may reach the API.
func (a *API) hostAllowed(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.Trim(name, "[]")
	switch {
	case name == "":
		return false
	case net.ParseIP(name) != nil, strings.EqualFold(name, "localhost"):
		return true
	}
	for _, allowed := range a.cfg.Hosts {
		if strings.EqualFold(allowed, host) || strings.EqualFold(allowed, name) {
			return true
		}
	}
	return false
}

// sameOrigin reports whether an Origin header names the API itself.
func sameOrigin(origin, host []byte) bool {
	u, err := url.Parse(string(origin))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false // including "null" from sandboxed pages and files
	}
	return strings.EqualFold(u.Host, string(host))
}

// jsonBody refuses a write whose body is not declared JSON (415).
func jsonBody(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		ct := ctx.Request.Header.ContentType()
		if i := bytes.IndexByte(ct, ';'); i >= 0 {
			ct = ct[:i]
		}
		if !bytes.EqualFold(bytes.TrimSpace(ct), []byte("application/json")) {
			writeError(ctx, fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json")
			return
		}
		next(ctx)
	}
}

// bearerOK checks an Authorization header against the token; the scheme
// is case-insensitive (RFC 9110 11.1).
func bearerOK(header []byte, token []byte) bool {
	scheme, cred, ok := bytes.Cut(bytes.TrimSpace(header), []byte(" "))
	return ok && bytes.EqualFold(scheme, []byte("Bearer")) &&
		subtle.ConstantTimeCompare(bytes.TrimSpace(cred), token) == 1
}
