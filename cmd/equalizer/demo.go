package main

import (
	"fmt"
	"net"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// demoPorts are the ports of the default EQUALIZER_BACKENDS.
var demoPorts = []string{"8081", "8082", "8083"}

// startDemoBackends serves three tiny backends that answer with their own
// name, so `curl localhost:8080/` shows the round robin at once.
func startDemoBackends(host string, log zerolog.Logger) (stop func(), err error) {
	var servers []*fasthttp.Server
	stop = func() {
		for _, s := range servers {
			_ = s.Shutdown()
		}
	}
	for i, port := range demoPorts {
		addr := net.JoinHostPort(host, port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("demo backend: %w", err)
		}
		name := fmt.Sprintf("backend-%d", i+1)
		s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/plain; charset=utf-8")
			fmt.Fprintf(ctx, "%s (%s) %s %s\n", name, addr, ctx.Method(), ctx.RequestURI())
		}}
		servers = append(servers, s)
		go func() { _ = s.Serve(ln) }()
		log.Info().Str("backend", name).Str("addr", addr).Msg("demo backend started")
	}
	return stop, nil
}
