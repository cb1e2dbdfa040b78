package proxy

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// gRPC clients read a call's result from grpc-status, not from the HTTP
// status: the proxy's own answers to gRPC calls are turned into gRPC
// statuses here.

// isGRPC reports whether r is a gRPC call (not gRPC-Web, whose status
// travels in the body).
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get(fasthttp.HeaderContentType)
	return strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/grpc-web")
}

// gRPC status codes (grpc/codes).
const (
	grpcCancelled         = 1
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
)

// grpcStatus is the gRPC status of the proxy's own answer: a limit's
// refusal is RESOURCE_EXHAUSTED, as Envoy's rate limit filter answers;
// the rest follow gRPC's HTTP-to-gRPC status mapping.
func grpcStatus(o Outcome) int {
	switch o {
	case Limited, BodyTooLarge, HeaderTooLarge:
		return grpcResourceExhausted
	case Denied:
		return grpcPermissionDenied
	case NoRoute:
		return grpcUnimplemented
	case BadRequest:
		return grpcInternal
	case TableFull, BadGateway, Unavailable:
		return grpcUnavailable
	case GatewayTimeout, RequestTimeout:
		return grpcDeadlineExceeded
	case ClientGone:
		return grpcCancelled
	}
	return grpcUnknown
}

// writeGRPCAnswer sends the proxy's own answer to a gRPC call as a
// trailers-only response: HTTP 200, grpc-status and grpc-message, with
// the answer's other fields (Retry-After, RateLimit, request ID).
func writeGRPCAnswer(w http.ResponseWriter, ctx *fasthttp.RequestCtx, x *exchange) {
	resp := &ctx.Response
	out := w.Header()
	copyOwnFields(out, &resp.Header)
	out.Set(fasthttp.HeaderContentType, "application/grpc")
	out.Set("Grpc-Status", strconv.Itoa(grpcStatus(x.outcome)))
	if msg := strings.TrimSpace(string(resp.Body())); msg != "" && !strings.Contains(string(resp.Header.ContentType()), "json") {
		out.Set("Grpc-Message", msg)
	} else {
		out.Set("Grpc-Message", http.StatusText(resp.StatusCode()))
	}
	w.WriteHeader(http.StatusOK)
}
