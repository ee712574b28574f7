package systemd

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// notifier is a datagram socket to $NOTIFY_SOCKET for messages that carry
// fds, which go-systemd's SdNotify cannot send (go-systemd issue 442). It
// stays open: the store gets one message per connection accepted and
// closed.
type notifier struct {
	fd   int
	addr *unix.SockaddrUnix
}

// sendTimeout bounds a send to systemd: its queue fills when it is slow
// (each FDSTORE=1 compares the fd with every one stored, see the README).
const sendTimeout = time.Second

func newNotifier(path string) (*notifier, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	tv := unix.NsecToTimeval(sendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setsockopt", err)
	}
	// A leading '@' names an abstract socket; x/sys/unix maps it.
	return &notifier{fd: fd, addr: &unix.SockaddrUnix{Name: path}}, nil
}

// send sends one notify message with fds attached.
func (n *notifier) send(state string, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err := unix.Sendmsg(n.fd, []byte(state), oob, n.addr, 0)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			// A send blocked on systemd's full queue is interrupted by any
			// signal (the runtime's preemption among them): with
			// SO_SNDTIMEO set, the kernel does not restart it.
			continue
		case errors.Is(err, unix.EAGAIN):
			return fmt.Errorf("systemd read nothing for %s: %w", sendTimeout, os.NewSyscallError("sendmsg", err))
		}
		return os.NewSyscallError("sendmsg", err)
	}
}

func (s *Supervisor) notifier() (*notifier, error) {
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	if s.store == nil {
		n, err := newNotifier(s.socket)
		if err != nil {
			return nil, fmt.Errorf("systemd: notify socket: %w", err)
		}
		s.store = n
	}
	return s.store, nil
}

// storeOp adds the socket to the store (FDSTORE=1) or removes it
// (FDSTOREREMOVE=1), by its name.
func (s *Supervisor) storeOp(rc syscall.RawConn, kind string, listening, add bool) error {
	n, err := s.notifier()
	if err != nil {
		return err
	}
	var opErr error
	err = rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if opErr = unix.Fstat(int(fd), &st); opErr != nil {
			opErr = os.NewSyscallError("fstat", opErr)
			return
		}
		name := keptName(st.Ino, kind, listening)
		if add {
			opErr = n.send("FDSTORE=1\nFDNAME="+name, int(fd))
		} else {
			opErr = n.send("FDSTOREREMOVE=1\nFDNAME=" + name)
		}
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		what := "remove from"
		if add {
			what = "add to"
		}
		return fmt.Errorf("systemd: %s the fd store: %w", what, err)
	}
	return nil
}

// barrier waits until systemd has read every message this process sent
// before it (BARRIER=1, sd_notify_barrier(3)): systemd closes the pipe
// end sent with it once it gets there.
func (s *Supervisor) barrier(timeout time.Duration) error {
	n, err := s.notifier()
	if err != nil {
		return err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	err = n.send("BARRIER=1", p[1])
	unix.Close(p[1])
	if err != nil {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(p[0]), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("systemd: no answer to BARRIER=1")
		}
		k, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if k > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			return nil
		}
	}
}

// isListening reports whether f is a listening socket.
func isListening(f *os.File) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var v int
	var opErr error
	err = rc.Control(func(fd uintptr) {
		v, opErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return false, os.NewSyscallError("getsockopt SO_ACCEPTCONN", err)
	}
	return v == 1, nil
}
