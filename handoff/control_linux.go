package handoff

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// listenControl returns the control socket's listener: the old process's,
// inherited, or a new one in a directory others cannot write to, replacing
// a socket file a crashed process left, and made owner-only.
func listenControl(path string, fromOld bool, listen func(network, addr string) (net.Listener, error)) (net.Listener, error) {
	if !fromOld {
		if err := prepareControlDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
		if err := removeStale(path); err != nil {
			return nil, err
		}
	}
	ln, err := listen("unix", path)
	if err != nil {
		return nil, err
	}
	// An inherited socket keeps its mode; a new one gets 0600 at once. In
	// between, the directory (0700, or sticky) is what keeps others out.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}

// prepareControlDir makes dir 0700 if it does not exist, or checks that
// controlDirSafe accepts it.
func prepareControlDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return err
	}
	owner := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = int(st.Uid)
	}
	return controlDirSafe(dir, fi.Mode(), owner, os.Getuid())
}

// removeStale removes a socket file at path that nothing answers on, as a
// crashed process leaves it. A file that is not a socket, or a socket
// that answers, is left alone and refused.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; remove it if it is not needed", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return errors.New("another process serves it")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe the existing socket: %w", err)
	}
	return os.Remove(path)
}

// checkControlPeer admits a peer of this process's uid, or root.
func checkControlPeer(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%w: not a Unix socket", errControl)
	}
	cred, err := wire.PeerCred(uc)
	if err != nil {
		return fmt.Errorf("%w: peer credentials: %w", errControl, err)
	}
	if int(cred.Uid) != os.Getuid() && cred.Uid != 0 {
		return fmt.Errorf("%w: permission denied: peer uid %d (pid %d) is neither uid %d nor root",
			errControl, cred.Uid, cred.Pid, os.Getuid())
	}
	return nil
}
