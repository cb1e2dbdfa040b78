// Package pooltest gives tests backends that misbehave below HTTP: a
// listener on 127.0.0.1 whose connections a test function serves byte by
// byte.
package pooltest

import (
	"net"
	"sync/atomic"
	"testing"
)

// RawBackend runs serve on every connection to a new 127.0.0.1 listener,
// each in its own goroutine, and closes the connection after it. It
// returns the backend's URL and the count of connections accepted; the
// listener closes when the test ends.
func RawBackend(t testing.TB, serve func(net.Conn)) (string, *atomic.Int64) {
	t.Helper()
	var accepted atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String(), &accepted
}
