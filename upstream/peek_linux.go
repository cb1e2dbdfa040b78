package upstream

import (
	"syscall"
	"unsafe"
)

// peekPending looks at the socket without reading from it and without
// blocking: MSG_PEEK|MSG_DONTWAIT answers EAGAIN when nothing is pending.
func peekPending(fd int) error {
	var b [1]byte
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == syscall.EAGAIN:
		return nil
	case errno == syscall.EINTR:
		return nil // nothing learned; the round trip will find out
	case errno != 0:
		return errno
	case n == 0:
		return errPeerClosed
	default:
		return ErrUnsolicited
	}
}
