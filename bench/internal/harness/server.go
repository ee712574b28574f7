package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/bench/internal/result"
	"github.com/handoff-dev/handoff/internal/proc"
)

// server is the pdf server under test and whatever processes its upgrades
// started, all in one process group.
type server struct {
	*proc.Group
	addr string
}

// startServer deploys src as the server binary in dir and starts it.
func startServer(dir, src, mode string) (*server, error) {
	bin := filepath.Join(dir, "pdf")
	if err := install(bin, src); err != nil {
		return nil, err
	}
	// A fixed port, not :0: restart mode starts the server again with the
	// same arguments, and its clients must find it where it was.
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	pidfile := filepath.Join(dir, "pdf.pid")
	args := []string{"-listen", port, "-drain-timeout", drainTimeout.String(), "-pidfile", pidfile,
		"-state", filepath.Join(dir, "state")}
	if mode == result.ModePlain {
		args = []string{"-listen", port, "-pidfile", pidfile, "-plain"} // no library, no state
	} else if flag := serverMode(mode); flag != result.ModeFull {
		args = append(args, "-upgrade-mode", flag)
	}
	if mode == result.ModeFullNoPrecopy {
		args = append(args, "-precopy=false")
	}
	g, err := proc.StartGroup(filepath.Join(dir, "server.log"), pidfile, bin, args...)
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	s := &server{Group: g}
	if err := waitFor(30*time.Second, func() bool { s.addr = s.servingAddr(); return s.addr != "" }); err != nil {
		s.kill()
		return nil, fmt.Errorf("harness: server did not start: %s", s.LogTail(20))
	}
	return s, nil
}

// serverMode is the pdf server's -upgrade-mode for a benchmark mode: a run
// without upgrades runs the default, full, which it never uses; full
// without pre-copy is full with -precopy=false.
func serverMode(mode string) string {
	if mode == result.ModeNone || mode == result.ModeFullNoPrecopy {
		return result.ModeFull
	}
	return mode
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

// servingAddr returns the address of the first "serving" log line, or "".
func (s *server) servingAddr() string {
	for line := range strings.Lines(s.log()) {
		if !strings.Contains(line, "msg=serving") {
			continue
		}
		if _, a, ok := strings.Cut(line, " addr="); ok {
			return strings.Fields(a)[0]
		}
	}
	return ""
}

func (s *server) servingCount() int { return strings.Count(s.log(), "msg=serving") }

// pid is the process serving now, by the pid file.
func (s *server) pid() int {
	p, _ := s.PID()
	return p
}

// log is the whole log of the chain.
func (s *server) log() string {
	b, _ := s.ReadLog(0)
	return string(b)
}

func (s *server) kill() { s.Stop(s.pid(), 10*time.Second) }

// usage returns the RSS (bytes) and open fds of pid.
func usage(pid int) (rss int64, fds int) {
	rss, _ = proc.StatusBytes(pid, "VmRSS")
	return rss, proc.OpenFds(pid)
}

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
