package handoff

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
)

// writePIDFile replaces path with this process's pid, atomically: a
// reader sees the old pid or the new one. A relative path is taken
// relative to dir, the working directory at New.
func writePIDFile(path, dir string, pid int) error {
	tmp, err := preparePIDFile(path, dir, pid)
	if err != nil {
		return err
	}
	return installPIDFile(tmp, path, dir)
}

// preparePIDFile writes pid to a file beside path, named after pid
// (pidTempPath), and returns its name: the step that a full disk or a
// read-only directory makes fail. installPIDFile puts it in place.
func preparePIDFile(path, dir string, pid int) (string, error) {
	tmp := pidTempPath(path, dir, pid)
	_ = os.Remove(tmp) // left by a killed process that had this pid
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	_, err = f.WriteString(strconv.Itoa(pid) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644) // whatever the umask
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// installPIDFile renames tmp, made by preparePIDFile, over path.
func installPIDFile(tmp, path, dir string) error {
	if err := os.Rename(tmp, absIn(path, dir)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// pidTempPath is where process pid prepares the PID file path: beside it,
// hidden, named so that the process that started pid can remove it when
// pid is killed before it could.
func pidTempPath(path, dir string, pid int) string {
	path = absIn(path, dir)
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new-"+strconv.Itoa(pid))
}

func absIn(path, dir string) string {
	if !filepath.IsAbs(path) {
		return filepath.Join(dir, path)
	}
	return path
}

// pidFile is Options.PIDFile as a process keeps it: relative to the
// working directory at New; empty path: no PID file.
type pidFile struct {
	path, dir string
	log       *slog.Logger
	getpid    func() int // the env's
}

// write names this process in the PID file.
func (f pidFile) write() error {
	if f.path == "" {
		return nil
	}
	if err := writePIDFile(f.path, f.dir, f.getpid()); err != nil {
		return fmt.Errorf("handoff: PID file: %w", err)
	}
	return nil
}

// prepare writes, in a process started by an upgrade, its pid beside the
// PID file before it says READY: an upgrade whose new process cannot be
// named there must not commit, or a service manager reading the file
// would lose the service. It returns the file that install renames into
// place at the commit; "" without a PID file.
func (f pidFile) prepare() (string, error) {
	if f.path == "" {
		return "", nil
	}
	tmp, err := preparePIDFile(f.path, f.dir, f.getpid())
	if err != nil {
		return "", fmt.Errorf("handoff: PID file: %w", err)
	}
	return tmp, nil
}

// install makes the PID file name this process, from what prepare wrote.
func (f pidFile) install(tmp string) error {
	if tmp == "" {
		return nil
	}
	if err := installPIDFile(tmp, f.path, f.dir); err != nil {
		return fmt.Errorf("handoff: PID file: %w", err)
	}
	return nil
}

// discard removes what the new process pid prepared, once it has been
// killed without committing.
func (f pidFile) discard(pid int) {
	if f.path == "" {
		return
	}
	err := os.Remove(pidTempPath(f.path, f.dir, pid))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.log.Warn("handoff: rollback: the new process's PID file left behind", "err", err)
	}
}
