package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// adoptedConn is a connection received from the old process, served
// through the fd as it was received. net.FileConn would duplicate it and
// close the original: 16 system calls per connection on the new process's
// side (fcntl and epoll_ctl for the os.File, dup, two fcntl, getsockopt,
// getsockname, getpeername, epoll_ctl, five setsockopt for keep-alive and
// no-delay, which the socket already has from its accept, then epoll_ctl
// and close for the os.File), the largest part of what the new process
// does per connection (bench/README.md, "Where the time goes"). Adopted
// as is, it costs fcntl, epoll_ctl, getsockname and getpeername (the
// addresses are read at once, as net.FileConn does: a peer that resets
// the connection later leaves RemoteAddr as it was).
//
// It behaves as the *net.TCPConn it replaces does for a handler: Read and
// Write through the runtime's poller, deadlines, errors as *net.OpError
// (net.ErrClosed once closed, os.ErrDeadlineExceeded at a deadline, io.EOF
// bare), CloseRead, CloseWrite and SyscallConn.
//
// Ownership: it owns the fd; Close closes it.
type adoptedConn struct {
	f     *os.File
	laddr net.Addr // from getsockname at adoption; nil if it failed
	raddr net.Addr // from getpeername
}

var _ net.Conn = (*adoptedConn)(nil)

// adoptFd makes a received connection's fd a net.Conn without copying it.
// The fd is close-on-exec (received with MSG_CMSG_CLOEXEC) and, shared
// with the old process's socket, non-blocking, which os.NewFile's own
// fcntl sees: the runtime's poller takes it. One that is not (no Go
// process sent it) is made non-blocking, as net.FileConn would. It owns
// fd: on error, fd is closed.
func adoptFd(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "handoff-conn")
	if f.SetReadDeadline(time.Time{}) == os.ErrNoDeadline {
		var err error
		if f, fd, err = pollable(f); err != nil {
			return nil, err
		}
	}
	c := &adoptedConn{f: f} // fd stays open as long as f: never f.Fd(), which blocks it
	// syscall's, not x/sys/unix's: for AF_INET and AF_INET6, unix asks
	// the socket's protocol too (getsockopt SO_PROTOCOL, to tell L2TP),
	// two system calls more a connection.
	if sa, err := syscall.Getsockname(fd); err == nil {
		c.laddr = sockaddrToAddr(sa)
	}
	if sa, err := syscall.Getpeername(fd); err == nil {
		c.raddr = sockaddrToAddr(sa)
	}
	return c, nil
}

// pollable replaces f, a blocking fd outside the runtime's poller, with a
// non-blocking copy that the poller takes, and returns its fd; it closes f
// either way.
func pollable(f *os.File) (*os.File, int, error) {
	defer f.Close()
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, -1, err
	}
	nfd := -1
	var serr error
	cerr := raw.Control(func(fd uintptr) {
		if nfd, serr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); serr == nil {
			serr = unix.SetNonblock(nfd, true)
		}
	})
	if serr == nil {
		serr = cerr
	}
	if serr != nil {
		if nfd >= 0 {
			unix.Close(nfd)
		}
		return nil, -1, os.NewSyscallError("fcntl", serr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nfd, nil
}

func (c *adoptedConn) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	if err != nil && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

func (c *adoptedConn) Write(b []byte) (int, error) {
	n, err := c.f.Write(b)
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

func (c *adoptedConn) Close() error {
	if err := c.f.Close(); err != nil {
		return c.opError("close", err)
	}
	return nil
}

// CloseWrite shuts down the writing side (shutdown(2) SHUT_WR), as
// *net.TCPConn's does: net/http ends a response so.
func (c *adoptedConn) CloseWrite() error { return c.shutdown(unix.SHUT_WR) }

// CloseRead shuts down the reading side.
func (c *adoptedConn) CloseRead() error { return c.shutdown(unix.SHUT_RD) }

func (c *adoptedConn) shutdown(how int) error {
	raw, err := c.f.SyscallConn()
	if err != nil {
		return c.opError("close", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), how) }); err != nil {
		return c.opError("close", err)
	}
	if serr != nil {
		return c.opError("close", os.NewSyscallError("shutdown", serr))
	}
	return nil
}

// SyscallConn reaches the fd without changing its mode (never Fd()).
func (c *adoptedConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

func (c *adoptedConn) LocalAddr() net.Addr { return c.laddr }

func (c *adoptedConn) RemoteAddr() net.Addr { return c.raddr }

func (c *adoptedConn) SetDeadline(t time.Time) error {
	return c.setErr(c.f.SetDeadline(t))
}

func (c *adoptedConn) SetReadDeadline(t time.Time) error {
	return c.setErr(c.f.SetReadDeadline(t))
}

func (c *adoptedConn) SetWriteDeadline(t time.Time) error {
	return c.setErr(c.f.SetWriteDeadline(t))
}

func (c *adoptedConn) setErr(err error) error {
	if err != nil {
		return c.opError("set", err)
	}
	return nil
}

// sockaddrToAddr turns a stream socket's address into the net.Addr its
// net.Conn would give: *net.TCPAddr, *net.UnixAddr, or nil.
func sockaddrToAddr(sa syscall.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
	case *syscall.SockaddrInet6:
		var zone string
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port, Zone: zone}
	case *syscall.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}
	}
	return nil
}

// opError shapes an os.File error as a net.Conn's: *net.OpError around
// the system call's error, net.ErrClosed for a closed connection.
func (c *adoptedConn) opError(op string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	} else if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	netw := "tcp"
	if _, ok := c.laddr.(*net.UnixAddr); ok {
		netw = "unix"
	}
	return &net.OpError{Op: op, Net: netw, Source: c.laddr, Addr: c.raddr, Err: err}
}
