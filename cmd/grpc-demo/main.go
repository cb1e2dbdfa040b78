// Command grpc-demo is a gRPC server and client to try gopher-equalizer's
// gRPC support with (README, "HTTP/2 and gRPC"):
//
//	grpc-demo serve 127.0.0.1:50051          # a grpc-go server: grpc.testing.TestService and grpc.health.v1
//	grpc-demo call -n 4 -key alice HOST:PORT # unary calls through the proxy, h2c; -tls for TLS
//
// Each call prints its gRPC status and, when refused, the retry hint the
// proxy sent.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "call":
		err = call(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc-demo:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: grpc-demo serve ADDR | grpc-demo call [-n N] [-key KEY] [-tls] [-insecure] ADDR")
	os.Exit(2)
}

// server answers UnaryCall with the name of the server that answered.
type server struct {
	testgrpc.UnimplementedTestServiceServer
	addr string
}

func (s *server) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: []byte("hello from " + s.addr)}}, nil
}

func serve(args []string) error {
	if len(args) != 1 {
		usage()
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, &server{addr: ln.Addr().String()})
	healthpb.RegisterHealthServer(s, health.NewServer())
	fmt.Println("gRPC server on", ln.Addr(), "(h2c)")
	return s.Serve(ln)
}

func call(args []string) error {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	n := fs.Int("n", 1, "calls to make")
	key := fs.String("key", "", "x-api-key metadata to send")
	useTLS := fs.Bool("tls", false, "TLS (h2 by ALPN) instead of h2c")
	skipVerify := fs.Bool("insecure", false, "with -tls: do not verify the certificate")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		usage()
	}
	creds := insecure.NewCredentials()
	if *useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: *skipVerify}) //nolint:gosec // asked for
	}
	conn, err := grpc.NewClient("passthrough:///"+fs.Arg(0), grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := testgrpc.NewTestServiceClient(conn)
	for i := 1; i <= *n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if *key != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", *key)
		}
		var trailer metadata.MD
		resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Trailer(&trailer))
		cancel()
		if err != nil {
			st := status.Convert(err)
			fmt.Printf("call %d: %s: %s", i, st.Code(), st.Message())
			if ra := trailer.Get("retry-after"); len(ra) > 0 {
				fmt.Printf(" (retry-after %s s, ratelimit %s)", ra[0], trailer.Get("ratelimit"))
			}
			fmt.Println()
			continue
		}
		fmt.Printf("call %d: OK: %s\n", i, resp.GetPayload().GetBody())
	}
	return nil
}
