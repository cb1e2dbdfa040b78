package admin

import (
	_ "embed"

	"github.com/valyala/fasthttp"
)

// The status page: one self-contained HTML file embedded in the binary. It
// holds no data; it polls /status (behind the token) every few seconds.
// The browser asks for the token once and keeps it in sessionStorage; a
// link may carry it as #token=... (a fragment, never sent to the server,
// so it cannot end up in a log).

//go:embed status.html
var statusPage []byte

func (a *API) page(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/html; charset=utf-8")
	h := &ctx.Response.Header
	// The page runs only its own inline code and talks only to this API.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	ctx.SetBody(statusPage)
}

func (a *API) status(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, fasthttp.StatusOK, a.metrics.Status())
}
