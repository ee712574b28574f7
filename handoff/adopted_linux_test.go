package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// adoptedPair returns a TCP connection adopted from a close-on-exec copy
// of an accepted socket's fd (as the new process receives it), the
// accepted connection it copies, and the client's end.
func adoptedPair(t *testing.T) (adopted net.Conn, accepted *net.TCPConn, client net.Conn) {
	t.Helper()
	accepted, client = loopbackPair(t)
	fd, err := dupConnFd(accepted)
	if err != nil {
		t.Fatal(err)
	}
	adopted, err = adoptFd(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adopted.Close() })
	return adopted, accepted, client
}

// TestAdoptedConn checks that a connection adopted without a copy of its
// fd behaves as the *net.TCPConn net.FileConn made: data both ways,
// addresses, deadlines and errors of the same kinds, half-close.
func TestAdoptedConn(t *testing.T) {
	c, accepted, client := adoptedPair(t)
	if got, want := c.LocalAddr().String(), accepted.LocalAddr().String(); got != want {
		t.Errorf("LocalAddr %s, want %s", got, want)
	}
	if got, want := c.RemoteAddr().String(), accepted.RemoteAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
	if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
		t.Errorf("RemoteAddr is a %T, want *net.TCPAddr", c.RemoteAddr())
	}
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadAtLeast(c, buf, 4); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadAtLeast(client, buf, 4); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}

	// A deadline: a timeout as net.Conn reports one.
	c.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := c.Read(buf)
	var ne net.Error
	var oe *net.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read past the deadline: %#v, want a *net.OpError timing out", err)
	}
	c.SetReadDeadline(time.Time{})

	// Half-close, as net/http ends a response.
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("no CloseWrite")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := client.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("client read after CloseWrite: %d, %v; want EOF", n, err)
	}
	// The peer's close: io.EOF, bare.
	client.Close()
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %#v; want io.EOF", n, err)
	}
}

// TestAdoptedConnFd checks the fd an adopted connection serves: the one
// received (no copy), still close-on-exec and non-blocking (shared with
// the old process's socket, which must stay non-blocking), and closed by
// Close, after which a read says net.ErrClosed.
func TestAdoptedConnFd(t *testing.T) {
	c, accepted, _ := adoptedPair(t)
	fd, err := connFd(c)
	if err != nil {
		t.Fatal(err)
	}
	fdFlags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || fdFlags&unix.FD_CLOEXEC == 0 {
		t.Errorf("adopted fd %d: F_GETFD %#x, %v; want close-on-exec", fd, fdFlags, err)
	}
	var oldFd int
	rc, _ := accepted.SyscallConn()
	rc.Control(func(f uintptr) { oldFd = int(f) })
	for _, f := range []int{fd, oldFd} {
		fl, err := unix.FcntlInt(uintptr(f), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("fd %d: F_GETFL %#x, %v; want non-blocking", f, fl, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		// Another test's socket may have taken the number since: only
		// a number still naming this connection's socket is a leak.
		if sameSocket(t, fd, oldFd) {
			t.Errorf("fd %d still open after Close", fd)
		}
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

// sameSocket reports whether fds a and b name the same socket.
func sameSocket(t *testing.T, a, b int) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil {
		return false
	}
	return sa.Ino == sb.Ino && sa.Dev == sb.Dev
}

// TestAdoptFdBlocking checks that a received fd in blocking mode is made
// non-blocking, as net.FileConn does, so that deadlines work, and that the
// blocking one is not kept open.
func TestAdoptFdBlocking(t *testing.T) {
	s, _ := loopbackPair(t)
	fd, err := dupConnFd(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		t.Fatal(err)
	}
	c, err := adoptFd(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The blocking fd was replaced by a non-blocking copy and closed.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("the blocking fd %d after adoption: %v, want EBADF (closed)", fd, err)
	}
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a deadline: %v, want os.ErrDeadlineExceeded", err)
	}
}
