package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcBackend is a real grpc-go server: the interop TestService plus the
// health service. ended receives the name of each call that ended because
// its client went away (deadline or cancel reached the backend).
type grpcBackend struct {
	testgrpc.UnimplementedTestServiceServer
	addr   string
	health *health.Server
	ended  chan string
}

func startGRPCBackend(t *testing.T) *grpcBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &grpcBackend{addr: ln.Addr().String(), health: health.NewServer(), ended: make(chan string, 16)}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	testgrpc.RegisterTestServiceServer(s, b)
	healthpb.RegisterHealthServer(s, b.health)
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(s.Stop)
	return b
}

func (b *grpcBackend) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if st := req.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md.Get("x-sleep")) > 0 {
		select {
		case <-ctx.Done():
			b.ended <- "unary"
			return nil, ctx.Err()
		case <-time.After(30 * time.Second):
		}
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "unary-done"))
	body := req.GetPayload().GetBody()
	if req.GetResponseSize() > 0 {
		body = bytes.Repeat([]byte{'r'}, int(req.GetResponseSize()))
	}
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: body}, Username: strings.Join(md.Get("x-forwarded-for"), ",")}, nil
}

func (b *grpcBackend) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func (b *grpcBackend) StreamingInputCall(s grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	total := 0
	for {
		req, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(req.GetPayload().GetBody())
	}
}

func (b *grpcBackend) FullDuplexCall(s grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		req, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if s.Context().Err() != nil {
				b.ended <- "bidi"
			}
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// grpcClient dials the proxy: h2c when ca is nil, TLS otherwise.
func grpcClient(t *testing.T, addr string, ca *testCA) testgrpc.TestServiceClient {
	t.Helper()
	creds := insecure.NewCredentials()
	if ca != nil {
		creds = credentials.NewTLS(&tls.Config{RootCAs: ca.pool, ServerName: "localhost"})
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// TestGRPCThroughTheProxy: a grpc-go client and server through the real
// binary, over h2c and over TLS (ALPN h2): unary with trailers, server,
// client and bidirectional streaming (10,000 messages both ways at once),
// a 16 MiB message each way, a trailers-only error, a deadline and a
// cancel that reach the backend, and the gRPC health protocol deciding
// the backend's health.
func TestGRPCThroughTheProxy(t *testing.T) {
	backend := startGRPCBackend(t)
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "proxy", 30)
	env := map[string]string{
		"EQUALIZER_BACKENDS":        "h2c://" + backend.addr,
		"EQUALIZER_HEALTH_PATH":     "grpc",
		"EQUALIZER_HEALTH_INTERVAL": "200ms",
		"EQUALIZER_BUCKET_CAPACITY": "100000",
		"EQUALIZER_ACCESS_LOG":      filepath.Join(t.TempDir(), "access.log"),
	}
	plain := startInstance(t, env)
	env["EQUALIZER_TLS_CERT"], env["EQUALIZER_TLS_KEY"] = cert, key
	secure := startInstance(t, env)

	for _, tc := range []struct {
		name string
		addr string
		ca   *testCA
	}{{"h2c", plain.proxy, nil}, {"tls", secure.proxy, ca}} {
		t.Run(tc.name, func(t *testing.T) {
			c := grpcClient(t, tc.addr, tc.ca)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			var trailer metadata.MD
			resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}}, grpc.Trailer(&trailer))
			if err != nil || string(resp.GetPayload().GetBody()) != "hello" {
				t.Fatalf("unary: %v %v", resp, err)
			}
			if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "unary-done" {
				t.Fatalf("the backend's trailer did not pass: %v", trailer)
			}
			if resp.GetUsername() != "127.0.0.1" {
				t.Fatalf("backend saw X-Forwarded-For %q", resp.GetUsername())
			}

			out, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}, {Size: 1000}, {Size: 100000}}})
			if err != nil {
				t.Fatal(err)
			}
			var sizes []int
			for {
				m, err := out.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("server streaming: %v", err)
				}
				sizes = append(sizes, len(m.GetPayload().GetBody()))
			}
			if fmt.Sprint(sizes) != "[1 1000 100000]" {
				t.Fatalf("server streaming sizes %v", sizes)
			}

			in, err := c.StreamingInputCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for range 100 {
				if err := in.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, 1024)}}); err != nil {
					t.Fatal(err)
				}
			}
			sum, err := in.CloseAndRecv()
			if err != nil || sum.GetAggregatedPayloadSize() != 100*1024 {
				t.Fatalf("client streaming: %v %v", sum, err)
			}

			bidiMessages(t, ctx, c, 10000)

			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
			resp, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: big}, ResponseSize: 16 << 20})
			if err != nil || len(resp.GetPayload().GetBody()) != 16<<20 {
				t.Fatalf("16 MiB each way: %d bytes, %v", len(resp.GetPayload().GetBody()), err)
			}

			_, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
			if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such thing" {
				t.Fatalf("trailers-only error: %v", err)
			}

			// A deadline: the client gives up, and the backend's call ends
			// too (grpc-timeout and the stream's reset passed on).
			dctx, dcancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-sleep", "1"), 300*time.Millisecond)
			_, err = c.UnaryCall(dctx, &testgrpc.SimpleRequest{})
			dcancel()
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("deadline: %v", err)
			}
			waitEnded(t, backend, "unary")

			// A cancel in the middle of a bidirectional stream.
			cctx, ccancel := context.WithCancel(ctx)
			s, err := c.FullDuplexCall(cctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
			ccancel()
			waitEnded(t, backend, "bidi")
		})
	}

	// The gRPC health protocol decides: NOT_SERVING takes the backend out
	// (calls get UNAVAILABLE), SERVING brings it back.
	c := grpcClient(t, plain.proxy, nil)
	backend.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	waitFor(t, "UNAVAILABLE while NOT_SERVING", func() bool {
		_, err := c.EmptyCall(context.Background(), &testgrpc.Empty{})
		return status.Code(err) == codes.Unavailable
	})
	backend.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	waitFor(t, "served again once SERVING", func() bool {
		_, err := c.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		return err == nil
	})
	waitFor(t, "the HTTP/2 access log lines", func() bool {
		data, _ := os.ReadFile(env["EQUALIZER_ACCESS_LOG"])
		return containsAll(string(data), `"protocol":"HTTP/2.0"`, `"uri":"/grpc.testing.TestService/FullDuplexCall"`, `"bytes_in":`)
	})
}

// bidiMessages sends n messages on one bidirectional stream while reading
// the echoes, both ways at once.
func bidiMessages(t *testing.T, ctx context.Context, c testgrpc.TestServiceClient, n int) {
	t.Helper()
	s, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		for i := range n {
			if sendErr = s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "m%d", i)}}); sendErr != nil {
				return
			}
		}
		sendErr = s.CloseSend()
	})
	for i := 0; ; i++ {
		m, err := s.Recv()
		if err == io.EOF {
			if i != n {
				t.Fatalf("bidi: %d echoes of %d", i, n)
			}
			break
		}
		if err != nil {
			t.Fatalf("bidi after %d: %v", i, err)
		}
		if want := fmt.Sprintf("m%d", i); string(m.GetPayload().GetBody()) != want {
			t.Fatalf("bidi echo %d is %q", i, m.GetPayload().GetBody())
		}
	}
	wg.Wait()
	if sendErr != nil {
		t.Fatal(sendErr)
	}
}

func waitEnded(t *testing.T, b *grpcBackend, call string) {
	t.Helper()
	select {
	case got := <-b.ended:
		if got != call {
			t.Fatalf("backend saw %s end, want %s", got, call)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the backend's %s call did not end when the client gave up", call)
	}
}

// TestGRPCRefusals: a call refused by a limit is RESOURCE_EXHAUSTED with
// the retry hint; with no backend it is UNAVAILABLE; over h2c and TLS.
func TestGRPCRefusals(t *testing.T) {
	backend := startGRPCBackend(t)
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "proxy", 31)
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"h2c", false}, {"tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{
				"EQUALIZER_BACKENDS":               "h2c://" + backend.addr,
				"EQUALIZER_HEALTH_PATH":            "grpc",
				"EQUALIZER_BUCKET_CAPACITY":        "3",
				"EQUALIZER_BUCKET_REFILL_AMOUNT":   "1",
				"EQUALIZER_BUCKET_REFILL_INTERVAL": "1m",
			}
			var pca *testCA
			if tc.tls {
				env["EQUALIZER_TLS_CERT"], env["EQUALIZER_TLS_KEY"] = cert, key
				pca = ca
			}
			in := startInstance(t, env)
			c := grpcClient(t, in.proxy, pca)
			ctx := context.Background()
			for i := range 3 {
				if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			var header, trailer metadata.MD
			_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&header), grpc.Trailer(&trailer))
			st := status.Convert(err)
			if st.Code() != codes.ResourceExhausted {
				t.Fatalf("4th call: %v, want RESOURCE_EXHAUSTED", err)
			}
			// A trailers-only answer: its fields arrive as trailers.
			md := metadata.Join(header, trailer)
			if got := md.Get("retry-after"); len(got) != 1 || got[0] != "60" {
				t.Fatalf("retry-after %v in %v", got, md)
			}
			if got := md.Get("ratelimit-policy"); len(got) != 1 || got[0] != `"default";q=3;w=180` {
				t.Fatalf("ratelimit-policy %v", got)
			}

			// No backend: every one refuses connections.
			env["EQUALIZER_BACKENDS"] = "h2c://" + freeAddr(t)
			env["EQUALIZER_BUCKET_CAPACITY"] = "100"
			down := startInstance(t, env)
			c = grpcClient(t, down.proxy, pca)
			_, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("no backend: %v, want UNAVAILABLE", err)
			}
		})
	}
}

// grpcRoutesFile sends the gRPC service to its own h2c pool, checked with
// the gRPC health protocol, under a limit per API key (gRPC metadata is
// HTTP/2 headers); everything else goes to the web pool.
const grpcRoutesFile = `
backends: [%q]
pools:
  grpc:
    backends: [h2c://%s]
    health_path: grpc
limits:
  per-key: {key: "header:x-api-key", capacity: 2, rate: 2/m}
routes:
  - name: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    pool: grpc
    limits: [per-key]
  - name: web
    match: {}
`

// TestGRPCRoutesAndLimits: gRPC calls routed by service path to an h2c
// pool and limited per API key; other HTTP/2 requests to the web pool.
func TestGRPCRoutesAndLimits(t *testing.T) {
	backend := startGRPCBackend(t)
	file := filepath.Join(t.TempDir(), "equalizer.yaml")
	writeFile(t, file, fmt.Sprintf(grpcRoutesFile, okBackend(t), backend.addr))
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})
	c := grpcClient(t, in.proxy, nil)
	call := func(key string) error {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", key)
		var trailer metadata.MD
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Trailer(&trailer))
		if err != nil && status.Code(err) == codes.ResourceExhausted {
			if got := trailer.Get("ratelimit-policy"); len(got) != 1 || got[0] != `"per-key";q=2;w=60` {
				return fmt.Errorf("refused with ratelimit-policy %v", got)
			}
		}
		return err
	}
	for i := range 2 {
		if err := call("alice"); err != nil {
			t.Fatalf("alice call %d: %v", i, err)
		}
	}
	if err := call("alice"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("alice's 3rd call: %v", err)
	}
	if err := call("bob"); err != nil {
		t.Fatalf("bob: %v", err)
	}
	resp, err := h2cClient().Get("http://" + in.proxy + "/page")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" || resp.ProtoMajor != 2 {
		t.Fatalf("web route over HTTP/2: %d %s %q", resp.StatusCode, resp.Proto, body)
	}
}

// TestGRPCExampleOfTheReadme runs the README's gRPC example: docs/grpc.yaml
// (its backends moved to this test's ports) and cmd/grpc-demo, server and
// client, as built from this repository.
func TestGRPCExampleOfTheReadme(t *testing.T) {
	demo := filepath.Join(t.TempDir(), "grpc-demo")
	if out, err := exec.Command("go", "build", "-o", demo, "../grpc-demo").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	grpcAddr := freeAddr(t)
	server := exec.Command(demo, "serve", grpcAddr)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() }) //nolint:errcheck
	example, err := os.ReadFile("../../docs/grpc.yaml")
	if err != nil {
		t.Fatal(err)
	}
	web := strings.TrimPrefix(okBackend(t), "http://")
	conf := strings.NewReplacer("127.0.0.1:50051", grpcAddr, "127.0.0.1:8081", web, "127.0.0.1:8082", web, "127.0.0.1:8083", web).Replace(string(example))
	file := filepath.Join(t.TempDir(), "grpc.yaml")
	writeFile(t, file, conf)
	in := startInstance(t, map[string]string{"EQUALIZER_CONFIG_FILE": file})
	var out []byte
	waitFor(t, "the gRPC pool healthy and calls answered", func() bool {
		out, err = exec.Command(demo, "call", "-n", "1", "-key", "warm-up", in.proxy).CombinedOutput()
		return err == nil && strings.HasPrefix(string(out), "call 1: OK")
	})
	out, err = exec.Command(demo, "call", "-n", "4", "-key", "alice", in.proxy).CombinedOutput()
	want := fmt.Sprintf("call 1: OK: hello from %[1]s\ncall 2: OK: hello from %[1]s\ncall 3: OK: hello from %[1]s\n"+
		"call 4: ResourceExhausted: rate limit exceeded (retry-after 20 s, ratelimit [\"per-key\";r=0;t=20])\n", grpcAddr)
	if err != nil || string(out) != want {
		t.Fatalf("grpc-demo call: %v\n%s\nwant\n%s", err, out, want)
	}
}

// TestHTTPSBackendNegotiatesH2: an https:// backend that offers h2 by ALPN
// gets HTTP/2 from HTTP/2 clients (a gRPC server over TLS works through
// it, trailers included) and HTTP/1.1 from HTTP/1.1 clients.
func TestHTTPSBackendNegotiatesH2(t *testing.T) {
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "backend", 50)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	byName := func(ln net.Listener) string { // a name, so that SNI is sent
		return "https://" + strings.Replace(ln.Addr().String(), "127.0.0.1", "localhost", 1)
	}
	grpcLn := listen()
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}})))
	testgrpc.RegisterTestServiceServer(s, &grpcBackend{ended: make(chan string, 16)})
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(grpcLn) //nolint:errcheck
	t.Cleanup(s.Stop)
	webLn := listen()
	web := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "proto="+r.Proto) //nolint:errcheck
	})}
	go web.ServeTLS(webLn, cert, key) //nolint:errcheck
	t.Cleanup(func() { web.Close() })
	env := func(backend string) map[string]string {
		return map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_BACKEND_CA": filepath.Join(ca.dir, "ca.pem"), "EQUALIZER_HEALTH_INTERVAL": "1h"}
	}

	// grpc-go over TLS insists on ALPN h2: its health is asked over HTTP/2.
	grpcEnv := env(byName(grpcLn))
	grpcEnv["EQUALIZER_HEALTH_PATH"] = "grpc"
	grpcIn := startInstance(t, grpcEnv)
	var trailer metadata.MD
	resp, err := grpcClient(t, grpcIn.proxy, nil).UnaryCall(context.Background(), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("over grpcs")}}, grpc.Trailer(&trailer))
	if err != nil || string(resp.GetPayload().GetBody()) != "over grpcs" || len(trailer.Get("x-trailer")) != 1 {
		t.Fatalf("gRPC to an https backend: %v %v %v", resp, err, trailer)
	}

	webIn := startInstance(t, env(byName(webLn)))
	r2, err := h2cClient().Get("http://" + webIn.proxy + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if string(body) != "proto=HTTP/2.0" {
		t.Fatalf("an HTTP/2 client to an https backend: %q", body)
	}
	if _, _, body := webIn.get(t, "/"); body != "proto=HTTP/1.1" {
		t.Fatalf("an HTTP/1.1 client to an https backend: %q", body)
	}
}
