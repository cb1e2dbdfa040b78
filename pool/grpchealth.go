package pool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Probes over HTTP/2, through the backend's own net/http client side:
// an h2c:// backend cannot answer an HTTP/1.1 GET. A health path of
// "grpc" or "grpc:SERVICE" asks the gRPC health protocol
// (grpc.health.v1.Health/Check, as Envoy's grpc_health_check and nginx's
// "health_check type=grpc" do): healthy is status SERVING. Any other path
// is a GET over HTTP/2, judged by its status like the HTTP/1.1 probe.

// GRPCHealthService reports whether path asks for the gRPC health protocol
// and for which service ("" is the server as a whole).
func GRPCHealthService(path string) (service string, ok bool) {
	if path == "grpc" {
		return "", true
	}
	return strings.CutPrefix(path, "grpc:")
}

// grpcServing is HealthCheckResponse{status: SERVING}: field 1, varint 1.
var grpcServing = []byte{0x08, 0x01}

func (c *Checker) probeH2(b *Backend) probeResult {
	cfg := c.cfg()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	result := func(status int, err error) probeResult {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timeout after %v", cfg.Timeout)
		}
		ok := err == nil && (status == 0 || cfg.Status.Has(status))
		return probeResult{ok: ok, status: status, err: err, latency: time.Since(start)}
	}
	service, isGRPC := GRPCHealthService(cfg.Path)
	var req *http.Request
	if isGRPC {
		// One length-prefixed message: HealthCheckRequest{service}.
		msg := []byte{}
		if service != "" {
			msg = append(binary.AppendUvarint([]byte{0x0a}, uint64(len(service))), service...)
		}
		frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, b.Scheme()+"://"+b.Addr+"/grpc.health.v1.Health/Check", bytes.NewReader(append(frame, msg...)))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, b.Scheme()+"://"+b.Addr+cfg.Path, nil)
	}
	req.Header.Set("User-Agent", "gopher-equalizer-health")
	resp, err := b.RoundTrip(req)
	if err != nil {
		return result(0, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if err != nil {
		return result(resp.StatusCode, err)
	}
	if !isGRPC {
		return result(resp.StatusCode, nil)
	}
	if resp.StatusCode != http.StatusOK {
		return result(resp.StatusCode, fmt.Errorf("gRPC health check answered HTTP %d", resp.StatusCode))
	}
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status") // trailers-only
	}
	if status != "0" {
		return result(resp.StatusCode, fmt.Errorf("gRPC health check failed: grpc-status %s %s", status, resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message")))
	}
	if len(body) < 5 || !bytes.Equal(body[5:], grpcServing) {
		return result(resp.StatusCode, fmt.Errorf("gRPC health check: service %q is not SERVING", service))
	}
	return result(0, nil)
}
