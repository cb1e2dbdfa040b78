package proxy

import (
	"bytes"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/limiter"
	"gopher-equalizer/limits"
	"gopher-equalizer/route"
)

// Charging a route's limits: every limit of the route is charged, in the
// route's order, and a request refused by one enforcing limit is charged
// to none (the tokens already taken are given back), as nginx does with
// several limit_req zones on a location. A shadow limit never refuses: it
// counts would_limit. Charging allocates nothing and takes no lock; a
// delayed request's wait (delay.go) is off that path.

// charge charges rt's limits for the request; it answers and returns false
// when one refuses. ipKey is the client's address as the limit "default"
// keys it (nil when no limit of the route needs it).
func (p *Proxy) charge(ctx *fasthttp.RequestCtx, x *exchange, rt *route.Route, ipKey []byte) bool {
	keys := keySource{req: &ctx.Request, ip: ipKey}
	now := ctx.Time().UnixNano()
	var charged, delayed [route.MaxLimits]bool
	var wait time.Duration
	for i, l := range rt.Limits {
		if l.Concurrency > 0 {
			admitted, counted := p.acquire(ctx, x, rt, l, charged[:i], &keys)
			if !admitted {
				return false
			}
			charged[i] = counted
			continue
		}
		var d limiter.Decision
		if l.Delay > 0 {
			d = l.Lim.AllowWithin(keys.of(x, l), now, int64(l.Delay))
		} else {
			d = l.Lim.Allow(keys.of(x, l), now)
		}
		switch {
		case d.Allowed:
			charged[i] = true
			x.decisions[i] = d
			if d.Retry > 0 { // its token comes later: wait for it
				delayed[i], wait = true, max(wait, d.Retry)
			}
		case l.Mode == limits.Shadow && !d.TableFull:
			l.Decisions[limits.WouldLimit].Add(1)
			x.wouldLimit = true
		default:
			p.giveBack(x, rt, charged[:i], &keys)
			p.releaseHeld(x)
			if !d.TableFull {
				l.Decisions[limits.Limited].Add(1)
			}
			x.limit = l
			p.refuseLimit(ctx, x, l, &d)
			return false
		}
	}
	if wait > 0 && !p.delay(ctx, x, rt, delayed[:len(rt.Limits)], charged[:len(rt.Limits)], &keys, wait) {
		return false
	}
	for i, l := range rt.Limits {
		switch {
		case delayed[i]:
			l.Decisions[limits.Delayed].Add(1)
		case charged[i]:
			l.Decisions[limits.Allowed].Add(1)
		}
	}
	p.Stats.admit()
	return true
}

// isExempt reports whether the client's address is in exempt:.
func (p *Proxy) isExempt(f *fields, peer netip.Addr, trusted bool) bool {
	exempt := *p.exempt.Load()
	return len(exempt) > 0 && denied(exempt, p.key.clientAddr(f, peer, trusted))
}

// acquire counts the request in flight for the concurrency limit l, or
// refuses it (giving back what the earlier limits took) when l's key has
// Concurrency requests in flight; a shadow limit only counts would_limit.
// counted: the request holds a count of l.
func (p *Proxy) acquire(ctx *fasthttp.RequestCtx, x *exchange, rt *route.Route, l *limits.Limit, charged []bool, keys *keySource) (admitted, counted bool) {
	if c := l.InFlight.Acquire(keys.of(x, l), l.Concurrency); c != nil {
		x.held[x.nheld] = heldSlot{f: l.InFlight, c: c}
		x.nheld++
		return true, true
	}
	if l.Mode == limits.Shadow {
		l.Decisions[limits.WouldLimit].Add(1)
		x.wouldLimit = true
		return true, false
	}
	p.refuseBusy(ctx, x, rt, l, charged, keys, "too many requests in flight\n")
	return false, false
}

// refuseBusy answers 429 for l when no bucket refused but the limit is
// full (requests in flight, or waiting for their tokens): what the
// request took is given back, and it may try again in a second.
func (p *Proxy) refuseBusy(ctx *fasthttp.RequestCtx, x *exchange, rt *route.Route, l *limits.Limit, charged []bool, keys *keySource, msg string) {
	p.giveBack(x, rt, charged, keys)
	p.releaseHeld(x)
	l.Decisions[limits.Limited].Add(1)
	x.limit = l
	x.answer(ctx, Limited, msg, fasthttp.StatusTooManyRequests)
	ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	p.problem(ctx, l)
}

// heldSlot is one request counted in flight by a concurrency limit.
type heldSlot struct {
	f *limits.InFlight
	c *atomic.Int64
}

// heldSlots are the in-flight counts of one request.
type heldSlots struct {
	held  [route.MaxLimits]heldSlot
	nheld int
}

// heldOf moves x's in-flight counts out of it (to a tunnel).
func heldOf(x *exchange) heldSlots {
	h := heldSlots{held: x.held, nheld: x.nheld}
	x.nheld = 0
	return h
}

// releaseHeld ends the in-flight counts of x now.
func (p *Proxy) releaseHeld(x *exchange) {
	h := heldOf(x)
	h.release()
}

func (h *heldSlots) release() {
	for i := range h.nheld {
		h.held[i].f.Release(h.held[i].c)
	}
	h.nheld = 0
}

// settleHeld releases x's in-flight counts when its response is over: now,
// or, for a response body that streams after the handler returned, when
// the body is done (the client connection's BodyDone). A tunnel took its
// counts with it (startTunnel).
func (p *Proxy) settleHeld(ctx *fasthttp.RequestCtx, x *exchange) {
	if c, ok := ctx.Conn().(*clientConn); ok && (c.untilClose || streamedBody(ctx)) {
		c.releaseHeld() // a body never closed must not hold its counts for ever
		c.held, c.nheld = x.held, x.nheld
		x.nheld = 0
		return
	}
	p.releaseHeld(x)
}

// keySource builds the keys of one request's limits in a buffer of the
// charging frame: the key of the limit "default" is the exchange's, the
// others are built from the request and the client's address (ip).
type keySource struct {
	req *fasthttp.Request
	ip  []byte
	buf [2*limits.MaxKeyLen + 64]byte
}

// of is the key of x's request for l, valid until the next call.
func (k *keySource) of(x *exchange, l *limits.Limit) []byte {
	if l.Key == nil {
		return x.key()
	}
	return l.Key.Append(k.buf[:0], k.req, k.ip)
}

// giveBack refunds the limits charged before a refusal.
func (p *Proxy) giveBack(x *exchange, rt *route.Route, charged []bool, keys *keySource) {
	for i, ok := range charged {
		if l := rt.Limits[i]; ok && l.Lim != nil { // concurrency counts end in releaseHeld
			l.Lim.Refund(keys.of(x, l))
		}
	}
}

// refuseLimit answers 429 for l (or 503 when its table is full): the
// Retry-After and RateLimit-* fields of before, and the fields of
// draft-ietf-httpapi-ratelimit-headers-11 naming the limit; a client that
// accepts JSON gets a problem details body (RFC 9457).
func (p *Proxy) refuseLimit(ctx *fasthttp.RequestCtx, x *exchange, l *limits.Limit, d *limiter.Decision) {
	p.refuse(ctx, x, d)
	if d.TableFull {
		return
	}
	h := &ctx.Response.Header
	var buf [160]byte
	h.SetBytesV("RateLimit-Policy", appendPolicy(buf[:0], l, d))
	h.SetBytesV("RateLimit", appendRateLimit(buf[:0], l, d))
	p.problem(ctx, l)
}

// problem makes the 429's body a problem details object (RFC 9457) for a
// client that accepts JSON.
func (p *Proxy) problem(ctx *fasthttp.RequestCtx, l *limits.Limit) {
	if acceptsJSON(ctx.Request.Header.Peek(fasthttp.HeaderAccept)) {
		ctx.Response.Header.SetContentType("application/problem+json")
		body := ctx.Response.Body()[:0]
		body = append(body, `{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Request cannot be satisfied as assigned quota has been exceeded","status":429,"violated-policies":[`...)
		body = strconv.AppendQuote(body, l.Name)
		body = append(body, "]}\n"...)
		ctx.Response.SetBodyRaw(body)
	}
}

// appendPolicy writes one RateLimit-Policy item (RFC 9651 structured
// field): "name";q=<capacity>;w=<seconds the capacity takes to refill>.
func appendPolicy(dst []byte, l *limits.Limit, d *limiter.Decision) []byte {
	dst = strconv.AppendQuote(dst, l.Name)
	dst = append(dst, ";q="...)
	dst = strconv.AppendInt(dst, d.Limit, 10)
	dst = append(dst, ";w="...)
	return strconv.AppendInt(dst, l.Window(), 10)
}

// appendRateLimit writes one RateLimit item: "name";r=<tokens left>;t=<
// seconds until one more> (until the bucket is full once tokens remain).
func appendRateLimit(dst []byte, l *limits.Limit, d *limiter.Decision) []byte {
	dst = strconv.AppendQuote(dst, l.Name)
	dst = append(dst, ";r="...)
	dst = strconv.AppendInt(dst, d.Remaining, 10)
	dst = append(dst, ";t="...)
	if d.Allowed {
		return strconv.AppendInt(dst, ceilSeconds(d.Reset, 0), 10)
	}
	return strconv.AppendInt(dst, ceilSeconds(d.Retry, 1), 10)
}

// setLimitFields adds one RateLimit-Policy and RateLimit item per charged
// limit of the route to a forwarded answer (EQUALIZER_RATELIMIT_HEADERS).
func setLimitFields(h *fasthttp.ResponseHeader, x *exchange, rt *route.Route) {
	var policy, state [512]byte
	pol, st := policy[:0], state[:0]
	for i, l := range rt.Limits {
		d := &x.decisions[i]
		if !d.Allowed || l.Lim == nil {
			continue
		}
		if len(pol) > 0 {
			pol, st = append(pol, ", "...), append(st, ", "...)
		}
		pol, st = appendPolicy(pol, l, d), appendRateLimit(st, l, d)
	}
	if len(pol) > 0 {
		h.SetBytesV("RateLimit-Policy", pol)
		h.SetBytesV("RateLimit", st)
	}
	// The fields of before, for clients that read them: the first limit.
	if len(rt.Limits) > 0 && x.decisions[0].Allowed && rt.Limits[0].Lim != nil {
		setRateLimitHeaders(h, &x.decisions[0])
	}
}

var jsonMedia = []byte("json")

// acceptsJSON reports whether an Accept value names a JSON media type
// (application/json, application/problem+json, */*+json).
func acceptsJSON(accept []byte) bool { return bytes.Contains(accept, jsonMedia) }
