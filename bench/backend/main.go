// Command backend is the benchmark's upstream: a minimal server that
// answers every request with a short fixed body on each address given, and
// GET /bytes/<n> with n bytes (streamed, with Content-Length) for the
// large-transfer runs. -impl picks the server: fasthttp (the default, the
// cheapest per request) or Go's net/http (what most Go services run, and
// more work per request).
//
//	go run ./bench/backend 127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103
//	go run ./bench/backend -impl nethttp 127.0.0.1:9101
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/valyala/fasthttp"
)

var body = []byte("hello from the backend\n")

func main() {
	impl := flag.String("impl", "fasthttp", "fasthttp or nethttp")
	flag.Parse()
	if flag.NArg() < 1 || (*impl != "fasthttp" && *impl != "nethttp") {
		log.Fatal("usage: backend [-impl fasthttp|nethttp] ADDR...")
	}
	for _, addr := range flag.Args() {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		if *impl == "nethttp" {
			go func() { log.Fatal(http.Serve(ln, http.HandlerFunc(netHTTP))) }()
			continue
		}
		s := &fasthttp.Server{Handler: fastHTTP, Name: "bench-backend"}
		go func() { log.Fatal(s.Serve(ln)) }()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}

// size parses /bytes/<n>; ok is false for other paths.
func size(path string) (n int, ok bool, err error) {
	s, ok := strings.CutPrefix(path, "/bytes/")
	if !ok {
		return 0, false, nil
	}
	n, err = strconv.Atoi(s)
	if err == nil && n < 0 {
		err = strconv.ErrRange
	}
	return n, true, err
}

func fastHTTP(ctx *fasthttp.RequestCtx) {
	if n, ok, err := size(string(ctx.Path())); ok {
		if err != nil {
			ctx.Error("bad size\n", fasthttp.StatusBadRequest)
			return
		}
		ctx.SetContentType("application/octet-stream")
		ctx.SetBodyStream(&io.LimitedReader{R: zeros{}, N: int64(n)}, n)
		return
	}
	ctx.SetContentType("text/plain")
	ctx.SetBody(body)
}

func netHTTP(w http.ResponseWriter, r *http.Request) {
	if n, ok, err := size(r.URL.Path); ok {
		if err != nil {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		io.Copy(w, &io.LimitedReader{R: zeros{}, N: int64(n)}) //nolint:errcheck
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write(body) //nolint:errcheck
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
