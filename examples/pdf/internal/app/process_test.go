package app

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/internal/testtool"
)

// The test binary doubles as the pdf server: with envServer set, TestMain
// runs Run with the process's arguments, as v1 or, if the file named by
// envVersion says "v2", as v2. Every process of a test, whether started by
// the test, by an upgrade or by a restart, decides so when it starts.
const (
	envServer  = "PDF_APP_TEST_SERVER"
	envVersion = "PDF_APP_TEST_VERSION" // file naming the version to run
)

func TestMain(m *testing.M) {
	if os.Getenv(envServer) != "" {
		if b, _ := os.ReadFile(os.Getenv(envVersion)); strings.TrimSpace(string(b)) == "v2" {
			os.Exit(Run("v2.0.0", ledger.NewV2(), os.Args[1:]))
		}
		os.Exit(Run("v1.0.0", ledger.NewV1(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

// pdf is a chain of server processes started by one test. They share the
// test's stderr pipe, from which the test learns what they did.
type pdf struct {
	dir     string
	addr    string
	pidfile string
	state   string // -state, unless the test's flags say otherwise
	pid     int    // the first process
	logs    *logLines
	done    chan struct{} // closed at the first process's exit
	err     error         // of the first process, once done is closed
}

// startPDF starts a server in a fresh directory and waits until it serves.
func startPDF(t *testing.T, mode string, flags ...string) *pdf {
	t.Helper()
	return startIn(t, t.TempDir(), mode, flags...)
}

// startIn starts a server in dir, where an earlier one may have left its
// state, and waits until it serves.
func startIn(t *testing.T, dir, mode string, flags ...string) *pdf {
	t.Helper()
	p := launch(t, dir, append([]string{"-upgrade-mode", mode}, flags...)...)
	p.logs.await(t, 0, "serving", p.pid)
	return p
}

// launch starts a server in dir with -listen, -pidfile and -state set and
// args after them, and returns at once: the process may refuse to start.
func launch(t *testing.T, dir string, args ...string) *pdf {
	t.Helper()
	return launchBin(t, dir, os.Args[0], args...)
}

// launchBin is launch with the server started from bin, the path its
// upgrades start again: a test can deploy another binary there.
func launchBin(t *testing.T, dir, bin string, args ...string) *pdf {
	t.Helper()
	return launchOn(t, dir, bin, testtool.FreeAddr(t), args...)
}

// launchOn is launchBin serving addr: a peer that takes over serves the
// address of the process it takes over from.
func launchOn(t *testing.T, dir, bin, addr string, args ...string) *pdf {
	t.Helper()
	p := &pdf{dir: dir, addr: addr, pidfile: filepath.Join(dir, "pid"), state: filepath.Join(dir, "state"),
		done: make(chan struct{})}
	args = append([]string{"-listen", p.addr, "-pidfile", p.pidfile, "-state", p.state}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), envServer+"=1", envVersion+"="+filepath.Join(dir, "version"), "TMPDIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	// An fd such as a launcher may leave open, without close-on-exec: fd 3.
	lr, lw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	defer lw.Close()
	cmd.ExtraFiles = []*os.File{lw}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p.pid = cmd.Process.Pid
	p.logs = readLines(r)
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		syscall.Kill(-p.pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("server logs:\n%s", p.logs)
		}
	})
	return p
}

// exitCode waits for the first process to exit and returns its code.
func (p *pdf) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("pid %d did not exit in 60s", p.pid)
	}
	if p.err == nil {
		return 0
	}
	var exit *exec.ExitError
	if !errors.As(p.err, &exit) {
		t.Fatalf("pid %d: %v", p.pid, p.err)
	}
	return exit.ExitCode()
}

// stop sends SIGTERM to pid, the process that serves now, and waits until
// every process of the chain has exited (their shared stderr is closed).
func (p *pdf) stop(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.logs.awaitEOF(t)
}

func (p *pdf) setVersion(t *testing.T, v string) {
	if err := os.WriteFile(filepath.Join(p.dir, "version"), []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (p *pdf) readPidfile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(p.pidfile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == 0 {
		t.Fatalf("pid file: %q, %v", b, err)
	}
	return pid
}

// logLines collects the servers' log lines as they come.
type logLines struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced at each new line, and at EOF
	eof     bool
}

func readLines(r io.ReadCloser) *logLines {
	l := &logLines{changed: make(chan struct{})}
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.add(sc.Text(), false)
		}
		l.add("", true)
	}()
	return l
}

func (l *logLines) add(line string, eof bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if eof {
		l.eof = true
	} else {
		l.lines = append(l.lines, line)
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *logLines) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// await returns the first line from index from on with message msg,
// logged by pid (any pid if 0, any other than -pid if negative).
func (l *logLines) await(t *testing.T, from int, msg string, pid int) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		l.mu.Lock()
		for _, line := range l.lines[min(from, len(l.lines)):] {
			got, _ := strconv.Atoi(field(line, "pid"))
			if field(line, "msg") == msg && (pid == 0 || pid == got || pid < 0 && got != -pid) {
				l.mu.Unlock()
				return line
			}
		}
		changed, eof := l.changed, l.eof
		l.mu.Unlock()
		if eof {
			t.Fatalf("the servers' stderr closed before %q of pid %d", msg, pid)
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no %q of pid %d in 60s", msg, pid)
		}
	}
}

// awaitEOF waits until every process that holds the servers' stderr has
// exited.
func (l *logLines) awaitEOF(t *testing.T) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		l.mu.Lock()
		changed, eof := l.changed, l.eof
		l.mu.Unlock()
		if eof {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatal("the servers did not exit in 60s")
		}
	}
}

// field returns the value of key in a log line of slog's text format.
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if s, err := strconv.QuotedPrefix(v); err == nil {
			u, _ := strconv.Unquote(s)
			return u
		}
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

// fds lists the open fds of pid above stderr, with what they point at.
func fds(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if fd, _ := strconv.Atoi(e.Name()); fd > 2 {
			target, _ := os.Readlink(filepath.Join(dir, e.Name()))
			out = append(out, e.Name()+" -> "+target)
		}
	}
	return out
}

// fdKind is what an fd of fds points at, without its number and inode.
func fdKind(f string) string {
	_, target, _ := strings.Cut(f, " -> ")
	kind, _, _ := strings.Cut(target, ":[")
	return kind
}
