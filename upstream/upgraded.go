package upstream

import (
	"bufio"
	"io"
	"net"
)

// Upgraded is the backend side of a connection that switched protocols
// (101): the proxy takes it from the response and tunnels bytes through it.
// Until taken, reading it yields nothing and closing it closes the backend
// connection, so an upgrade the proxy refuses leaks nothing.
type Upgraded struct {
	conn    net.Conn
	br      *bufio.Reader // may hold the first bytes the backend sent after 101
	release func()
	taken   bool
}

// Read implements io.Reader: a 101 answer has no body.
func (u *Upgraded) Read([]byte) (int, error) { return 0, io.EOF }

// Close closes the backend connection unless the tunnel took it.
func (u *Upgraded) Close() error {
	if !u.taken {
		u.taken = true
		u.release()
	}
	return nil
}

// Take hands the connection to the caller, with a reader that first
// returns what was already buffered, and a function that closes it.
func (u *Upgraded) Take() (conn net.Conn, r io.Reader, closeConn func()) {
	u.taken = true
	return u.conn, u.br, u.release
}
