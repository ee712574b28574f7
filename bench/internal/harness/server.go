package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/bench/internal/result"
	"github.com/handoff-dev/handoff/internal/proc"
)

// server is the pdf server under test and whatever processes its upgrades
// started, all in one process group.
type server struct {
	dir, bin, pidfile, logPath string
	cmd                        *exec.Cmd
	addr                       string
}

// startServer deploys src as the server binary in dir and starts it.
func startServer(dir, src, mode string) (*server, error) {
	s := &server{dir: dir, bin: filepath.Join(dir, "pdf"), pidfile: filepath.Join(dir, "pdf.pid"),
		logPath: filepath.Join(dir, "server.log")}
	if err := install(s.bin, src); err != nil {
		return nil, err
	}
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// A fixed port, not :0: restart mode starts the server again with the
	// same arguments, and its clients must find it where it was.
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-listen", port, "-drain-timeout", drainTimeout.String(), "-pidfile", s.pidfile, "-state", filepath.Join(dir, "state")}
	if mode != result.ModeFull {
		args = append(args, "-upgrade-mode", mode)
	}
	s.cmd = exec.Command(s.bin, args...)
	s.cmd.Stderr = logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go s.cmd.Wait()
	if err := waitFor(30*time.Second, func() bool { s.addr = s.servingAddr(0); return s.addr != "" }); err != nil {
		s.kill()
		return nil, fmt.Errorf("harness: server did not start: %s", s.tail())
	}
	return s, nil
}

// drainTimeout is how long the old process of a listeners upgrade serves
// its connections before it closes them. The pdf default is 5 s; the
// clients see the same drop whatever it is, only later.
const drainTimeout = 2 * time.Second

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// servingAddr returns the address of the "serving" log line after the
// first skip ones, or "".
func (s *server) servingAddr(skip int) string {
	b, _ := os.ReadFile(s.logPath)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(line, []byte("msg=serving")) {
			continue
		}
		if skip--; skip >= 0 {
			continue
		}
		if _, a, ok := strings.Cut(string(line), " addr="); ok {
			return strings.Fields(a)[0]
		}
	}
	return ""
}

func (s *server) servingCount() int {
	b, _ := os.ReadFile(s.logPath)
	return bytes.Count(b, []byte("msg=serving"))
}

func (s *server) pid() int {
	b, _ := os.ReadFile(s.pidfile)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func (s *server) tail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

func (s *server) kill() {
	if p := s.pid(); p > 0 {
		syscall.Kill(p, syscall.SIGTERM)
		waitFor(10*time.Second, func() bool { return !proc.Alive(p) })
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
}

// usage returns the RSS (bytes) and open fds of pid.
func usage(pid int) (rss int64, fds int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			rss = kb << 10
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rss, len(ents)
}

// cpuTime returns the CPU time pid has used, user and system.
func cpuTime(pid int) time.Duration {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// Fields after the command name, which is in parentheses.
	_, rest, _ := bytes.Cut(b, []byte(") "))
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux.
const clockTicks = 100

func waitFor(timeout time.Duration, ok func() bool) error {
	return proc.Poll(context.Background(), time.Millisecond, timeout, func() (bool, error) { return ok(), nil })
}

// install deploys the binary at src as dst.
func install(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return proc.Install(dst, in)
}
