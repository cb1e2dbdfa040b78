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

// TCPPair returns both ends of one TCP connection on 127.0.0.1: the side
// that dialled and the side that accepted. Both close when the test ends.
func TCPPair(t testing.TB) (dialled *net.TCPConn, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-done
	if server == nil {
		c.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); server.Close() })
	return c.(*net.TCPConn), server
}
