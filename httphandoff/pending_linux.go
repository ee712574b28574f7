package httphandoff

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// pending reports whether bytes wait in nc's receive queue, without
// reading them or waiting (SIOCINQ, which is TIOCINQ); false if it
// cannot tell.
func pending(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n, ierr := 0, error(nil)
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil {
		return false
	}
	return ierr == nil && n > 0
}
