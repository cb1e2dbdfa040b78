package proxy

import (
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/histogram"
	"gopher-equalizer/limiter"
	"gopher-equalizer/limits"
	"gopher-equalizer/pool"
	"gopher-equalizer/route"
)

// Outcome is how the proxy ended a request: forwarded to a backend, or
// answered by the proxy itself with one status.
type Outcome uint8

const (
	Forwarded      Outcome = iota // a backend answered
	Limited                       // 429
	TableFull                     // 503: no bucket could be made, the table is full of debt
	BadRequest                    // 400: malformed request, bad header name or client key
	RequestTimeout                // 408: the client was too slow sending its head
	BodyTooLarge                  // 413: body over EQUALIZER_MAX_BODY_SIZE
	HeaderTooLarge                // 431: head over EQUALIZER_MAX_HEADER_SIZE
	BadGateway                    // 502: the backend failed or answered garbage
	Unavailable                   // 503: no healthy backend, or its connection limit
	GatewayTimeout                // 504: no response head within EQUALIZER_BACKEND_TIMEOUT
	NoRoute                       // 404: no route matches
	Denied                        // 403: the client address is in deny:
	ClientGone                    // 499: the client left while its request waited (delay)
	NumOutcomes
)

// OutcomeNames are the label values of the outcomes, in order.
var OutcomeNames = [NumOutcomes]string{
	"forwarded", "limited", "table_full", "bad_request", "request_timeout",
	"body_too_large", "header_too_large", "bad_gateway", "unavailable", "gateway_timeout",
	"no_route", "denied", "client_gone",
}

// Stats counts requests by outcome. Plain atomics: /metrics reads them.
type Stats struct {
	Requests [NumOutcomes]atomic.Uint64
	// Admitted counts requests the limiter let through (Limited and
	// TableFull count the others).
	Admitted  atomic.Uint64
	Tunnels   atomic.Uint64 // Upgrade tunnels opened
	OpenConns atomic.Int64  // client connections open
	HTTP2     atomic.Uint64 // requests over HTTP/2 (the rest are HTTP/1.x)
	OpenHTTP2 atomic.Int64  // of OpenConns, the HTTP/2 ones
	// Delay is how long delayed requests waited for their token.
	Delay histogram.Histogram
}

// exchange is what one request's handling learned, for the counters and
// the access log. It lives on the handler's stack.
type exchange struct {
	outcome Outcome
	route   *route.Route  // nil before routing, or when none matched
	limit   *limits.Limit // the limit that refused, if one did
	// charged: the route's limits were charged (not exempt, limiting on).
	charged bool
	// streamDone closes when an HTTP/2 client resets its stream (nil for
	// HTTP/1.x, whose client leaves by closing the connection).
	streamDone <-chan struct{}
	// wouldLimit: a shadow limit found no token.
	wouldLimit bool
	decisions  [route.MaxLimits]limiter.Decision // of the route's limits
	held       [route.MaxLimits]heldSlot         // counted in flight
	nheld      int
	backend    *pool.Backend // nil when no backend was tried
	upstream   time.Duration // waiting for backends' response heads
	keyLen     int           // the client key is keyBuf[:keyLen]
	keyHash    uint64        // pool.KeyHash of the key, for the hash strategy
	keyBuf     [MaxKeyLen]byte
	bodyIn     *requestBody // the streamed request body, when there is one
	idLen      int          // the request ID is idBuf[:idLen]
	idNew      bool         // made here, not the client's
	idLines    int          // request ID lines the client sent
	idBuf      [maxRequestIDLen]byte
}

// streamGone reports whether an HTTP/2 client reset the request's stream.
func (x *exchange) streamGone() bool {
	select {
	case <-x.streamDone:
		return true
	default:
		return false
	}
}

// id is the request ID, empty when IDs are off.
func (x *exchange) id() []byte { return x.idBuf[:x.idLen] }

// key is the client key, empty when there was none. (A slice of keyBuf
// kept in the struct would point into itself and move it to the heap.)
func (x *exchange) key() []byte { return x.keyBuf[:x.keyLen] }

// answer makes the proxy's own response and records its outcome.
func (x *exchange) answer(ctx *fasthttp.RequestCtx, o Outcome, msg string, status int) {
	x.outcome = o
	ctx.Error(msg, status)
}
