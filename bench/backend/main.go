// Command backend is the benchmark's upstream: a minimal fasthttp server
// that answers every request with a short fixed body on each address given,
// and GET /bytes/<n> with n bytes (streamed, with Content-Length) for the
// large-transfer runs.
//
//	go run ./bench/backend 127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103
package main

import (
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/valyala/fasthttp"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: backend ADDR...")
	}
	body := []byte("hello from the backend\n")
	handler := func(ctx *fasthttp.RequestCtx) {
		if n, ok := strings.CutPrefix(string(ctx.Path()), "/bytes/"); ok {
			size, err := strconv.Atoi(n)
			if err != nil || size < 0 {
				ctx.Error("bad size\n", fasthttp.StatusBadRequest)
				return
			}
			ctx.SetContentType("application/octet-stream")
			ctx.SetBodyStream(&io.LimitedReader{R: zeros{}, N: int64(size)}, size)
			return
		}
		ctx.SetContentType("text/plain")
		ctx.SetBody(body)
	}
	for _, addr := range os.Args[1:] {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		s := &fasthttp.Server{Handler: handler, Name: "bench-backend"}
		go func() { log.Fatal(s.Serve(ln)) }()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
