// Command h2bare is the ceiling of the HTTP/2 suite (bench/h2.sh): Go's
// HTTP/2 server (golang.org/x/net/http2, the one gopher-equalizer uses)
// answering "ok" itself, over h2c, with no proxying at all.
package main

import (
	"log"
	"net"
	"net/http"
	"os"

	"golang.org/x/net/http2"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: h2bare ADDR")
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	s := &http2.Server{MaxConcurrentStreams: 128}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go s.ServeConn(c, &http2.ServeConnOpts{Handler: ok})
	}
}
