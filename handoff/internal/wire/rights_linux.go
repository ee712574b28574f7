package wire

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

func oobSpace(nfds int) int { return unix.CmsgSpace(nfds * 4) }

func rightsOOB(fds []int) []byte {
	if len(fds) == 0 {
		return nil
	}
	return unix.UnixRights(fds...)
}

// parseRights returns the fds in a control message buffer. Anything but
// SCM_RIGHTS is an error; fds found are returned even then, to be closed.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, os.NewSyscallError("parse control message", err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			bad = Errorf("unexpected control message level %d type %d", m.Header.Level, m.Header.Type)
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = os.NewSyscallError("parse SCM_RIGHTS", err)
			continue
		}
		fds = append(fds, got...)
	}
	return fds, bad
}

// checkRecvFlags turns truncation into errors. MSG_CTRUNC means the kernel
// dropped fds that did not fit (the receiver's fd table was full, see
// shared/LIMITS.md): those connections would be lost, so the upgrade fails.
func checkRecvFlags(flags int) error {
	if flags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("handoff: receive: fds truncated (MSG_CTRUNC): the receiving process could not hold them")
	}
	if flags&unix.MSG_TRUNC != 0 {
		return Errorf("packet longer than %d bytes", headerLen+maxPacketData)
	}
	return nil
}

// CloseFds closes every fd of fds.
func CloseFds(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// PeerCred returns the kernel's record of who is at the other end of c:
// for a connected socket, the process that called connect or listen; for
// a socketpair, the process that made it.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, os.NewSyscallError("getsockopt SO_PEERCRED", cerr)
	}
	return cred, nil
}
