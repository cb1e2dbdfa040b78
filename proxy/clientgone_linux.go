package proxy

import (
	"syscall"
	"unsafe"
)

// socketClosed looks at the client's socket without reading and without
// blocking: an orderly close (0 bytes) or a reset means the client is
// gone; pending bytes (a pipelined request) or nothing (EAGAIN) do not.
func socketClosed(fd uintptr) bool {
	var b [1]byte
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		return false
	case errno != 0:
		return true
	}
	return n == 0
}
