package proxy

import (
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/limits"
	"gopher-equalizer/route"
)

// Delayed requests (a limit's delay, nginx limit_req delay=): a request
// whose token comes within the limit's delay reserved it when charged, and
// waits here for it on a timer (no spinning), then goes on. Waiting
// requests are counted per limit and capped (limits.MaxWaiting; past it,
// 429). A client that goes away while it waits frees its place and is not
// charged: the socket is looked at every waitStep.

const waitStep = 50 * time.Millisecond

// delay waits wait for the request's reserved tokens; delayed marks the
// limits that reserved one. It answers and returns false when the request
// does not go on.
func (p *Proxy) delay(ctx *fasthttp.RequestCtx, x *exchange, rt *route.Route, delayed []bool, charged []bool, keys *keySource, wait time.Duration) bool {
	counted := 0
	defer func() {
		for i := range counted {
			if delayed[i] {
				rt.Limits[i].Waiting.Add(-1)
			}
		}
	}()
	for i, l := range rt.Limits {
		counted = i + 1
		if delayed[i] && l.Waiting.Add(1) > limits.MaxWaiting {
			p.refuseBusy(ctx, x, rt, l, charged, keys, "too many requests waiting\n")
			return false
		}
	}
	for left := wait; left > 0; left -= waitStep {
		time.Sleep(min(left, waitStep))
		if x.streamGone() || clientGone(ctx.Conn()) {
			p.giveBack(x, rt, charged, keys)
			p.releaseHeld(x)
			x.answer(ctx, ClientGone, "", StatusClientClosedRequest)
			ctx.SetConnectionClose()
			return false
		}
	}
	p.Stats.Delay.Observe(wait)
	return true
}

// StatusClientClosedRequest is nginx's 499: the client went away first.
const StatusClientClosedRequest = 499

// clientGone reports whether the client closed its connection (TCP, also
// under TLS once the peer's FIN arrived).
func clientGone(c net.Conn) bool {
	if cc, ok := c.(*clientConn); ok {
		c = cc.Conn
	}
	if t, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	_ = rc.Control(func(fd uintptr) { gone = socketClosed(fd) })
	return gone
}
