package handoff

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
	"golang.org/x/sys/unix"
)

// parentPID reads the parent of pid from /proc.
func parentPID(pid int32) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields start after its last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 2 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return strconv.Atoi(f[1])
}

// fdUsage returns how many fds this process has open, the highest of
// them, and RLIMIT_NOFILE's soft limit.
func fdUsage() (open, highest int, limit uint64, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, 0, os.NewSyscallError("getrlimit", err)
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, 0, 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1) // unsorted, no lstat: half of os.ReadDir's time at 15k fds
	if err != nil {
		return 0, 0, 0, err
	}
	for _, name := range names {
		if n, err := strconv.Atoi(name); err == nil && n > highest {
			highest = n
		}
	}
	return len(names), highest, rl.Cur, nil
}

// fdHeadroom is kept free in the receiver for the runtime and the application.
const fdHeadroom = 64

// growFdTable makes the fd table big enough for n more fds now, once:
// a multi-threaded process pays an RCU wait each time the kernel doubles it
// (shared/LIMITS.md), which would otherwise land inside the handoff.
func growFdTable(n int) error {
	open, highest, limit, err := fdUsage()
	if err != nil {
		return err
	}
	if uint64(open+n+fdHeadroom) > limit {
		return fmt.Errorf("handoff: %d connections do not fit: %d fds open, limit %d", n, open, limit)
	}
	return growFdTableTo(int(min(uint64(highest+n+fdHeadroom), limit-1)))
}

// prefaultPerConn is about what an adopted connection's memory comes to
// before and right after COMMIT: its read buffer (readBufSize), its
// goroutine's stack grown to 4 KiB (the first 2 KiB one freed for the
// next), and its objects.
const prefaultPerConn = 10 << 10

// prefault maps, in one system call, the memory that n connections about
// to be adopted will take, then gives it back to the Go heap, which
// places their buffers and stacks in it. Page by page, at first touch,
// the kernel's page faults cost 10-15 µs each on our VMs where
// MADV_POPULATE_WRITE costs 0.6 µs a page (bench/README.md): about 30 µs
// of the new process's CPU per connection, on a core that the old process
// needs to serve. On a kernel without it (before 5.14) the pages fault
// as they are touched, as before.
func prefault(n int) {
	if n <= 0 {
		return
	}
	b := make([]byte, n*prefaultPerConn) // a fresh span: not zeroed, so not touched
	_ = unix.Madvise(b, unix.MADV_POPULATE_WRITE)
	runtime.KeepAlive(b)
	runtime.GC() // its pages are free for what comes next
}

// growFdTableTo makes the table hold fd number target: F_DUPFD takes the
// lowest free number from target up, and the table grows to fit it. Not
// dup3 onto target: another goroutine may have opened an fd there since
// fdUsage looked, and dup3 would close it.
func growFdTableTo(target int) error {
	devnull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("open /dev/null", err)
	}
	defer unix.Close(devnull)
	fd, err := unix.FcntlInt(uintptr(devnull), unix.F_DUPFD_CLOEXEC, target)
	if err != nil {
		return os.NewSyscallError("fcntl F_DUPFD", err)
	}
	return unix.Close(fd)
}

// connFd returns the fd of c without changing its mode (never Fd(): that
// makes the socket blocking, for this process and the peer sharing it). The
// number stays valid while c is not closed; parked connections are not.
func connFd(c any) (int, error) {
	fd := -1
	err := controlConn(c, func(f uintptr) { fd = int(f) })
	return fd, err
}

// dupConnFd returns a close-on-exec duplicate of c's fd, made while c
// cannot be closed, for a connection whose handler is still running. The
// caller closes it.
func dupConnFd(c any) (int, error) {
	dup, derr := -1, error(nil)
	if err := controlConn(c, func(f uintptr) { dup, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return dup, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
}

// controlConn runs fn with c's fd, which c cannot close meanwhile.
func controlConn(c any, fn func(fd uintptr)) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return fmt.Errorf("handoff: %T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return raw.Control(fn)
}

// peerIsParent verifies that the peer of c is this process's parent.
func peerIsParent(c *net.UnixConn) error {
	cred, err := wire.PeerCred(c)
	if err != nil {
		return err
	}
	if int(cred.Pid) != os.Getppid() || int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("handoff: socket belongs to pid %d uid %d, not to the parent %d: %w", cred.Pid, cred.Uid, os.Getppid(), ErrNotChild)
	}
	return nil
}

// dialPacket connects to a SOCK_SEQPACKET socket at path: the takeover
// socket.
func dialPacket(path string) (*net.UnixConn, error) {
	return net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
}
