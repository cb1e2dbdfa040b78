package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// maxRequestIDLen bounds a client's request ID; longer ones are replaced.
const maxRequestIDLen = 128

// requestIDs keeps a client's request ID when it is sane, or makes one:
// a random per-process prefix and a counter, so IDs are unique across
// instances and restarts, cost one atomic add, and take no lock.
type requestIDs struct {
	name   []byte // the header, e.g. X-Request-ID; empty: off
	prefix [17]byte
	next   atomic.Uint64
}

func newRequestIDs(name string) *requestIDs {
	if name == "" {
		return nil
	}
	r := &requestIDs{name: []byte(name)}
	var random [8]byte
	rand.Read(random[:]) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
	hex.Encode(r.prefix[:16], random[:])
	r.prefix[16] = '-'
	return r
}

// assign decides the request ID of x: the client's single sane value, or a
// new one. It leaves the header alone (f points into it); upstream puts
// the ID in the request, reply in the response.
func (r *requestIDs) assign(f *fields, x *exchange) {
	if f.reqIDLines == 1 && saneRequestID(f.reqID) {
		x.idLen = copy(x.idBuf[:], f.reqID)
		return
	}
	x.idLines = f.reqIDLines
	x.idNew = true
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], r.next.Add(1))
	x.idLen = len(hex.AppendEncode(append(x.idBuf[:0], r.prefix[:]...), n[:]))
}

// upstream writes a new request ID into the request, in place of every
// line the client sent.
func (r *requestIDs) upstream(h *fasthttp.RequestHeader, x *exchange) {
	if !x.idNew {
		return
	}
	if x.idLines > 0 {
		deleteAll(h, r.name)
	}
	h.SetBytesKV(r.name, x.id())
}

// reply puts the request ID on the response, whoever made it.
func (r *requestIDs) reply(ctx *fasthttp.RequestCtx, x *exchange) {
	if x.idLen > 0 {
		ctx.Response.Header.SetBytesKV(r.name, x.id())
	}
}

// saneRequestID accepts what request IDs look like in the wild (UUIDs,
// hex, base64, trace IDs): 1 to 128 bytes of letters, digits and ._~:/+=@-.
func saneRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for _, c := range id {
		if !requestIDChars[c] {
			return false
		}
	}
	return true
}

var requestIDChars = charTable("._~:/+=@-")
