package app

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
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
	pid     int // the first process
	logs    *logLines
	done    chan error // the first process's exit
}

func startPDF(t *testing.T, mode string, flags ...string) *pdf {
	t.Helper()
	dir := t.TempDir()
	p := &pdf{dir: dir, addr: freeAddr(t), pidfile: filepath.Join(dir, "pid"), done: make(chan error, 1)}
	args := append([]string{"-listen", p.addr, "-pidfile", p.pidfile, "-state", filepath.Join(dir, "state"),
		"-upgrade-mode", mode}, flags...)
	cmd := exec.Command(os.Args[0], args...)
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
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-p.pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("server logs:\n%s", p.logs)
		}
	})
	p.logs.await(t, 0, "serving", p.pid)
	return p
}

// freeAddr finds a loopback port to listen on. A restart listens again, so
// the address must be fixed.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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

// TestUpgradeModeListeners: on SIGHUP the old process snapshots the ledger
// and hands over its listener only. The new process restores the snapshot;
// the old one keeps answering on its connection through the drain, then
// closes it and exits.
func TestUpgradeModeListeners(t *testing.T) {
	const drain = time.Second
	p := startPDF(t, modeListeners, "-drain-timeout", drain.String())
	old := p.pid
	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	c.Ask(t, "CHARGE 2 alice 30", "OK 2 70")

	p.setVersion(t, "v2")
	mark := p.logs.len()
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	done := p.logs.await(t, mark, "upgrade complete", old)
	if field(done, "mode") != modeListeners {
		t.Fatalf("upgrade complete in mode %q, want %q", field(done, "mode"), modeListeners)
	}
	serving := p.logs.await(t, mark, "serving", -old)
	newPid, _ := strconv.Atoi(field(serving, "pid"))
	if got := p.readPidfile(t); got != newPid {
		t.Fatalf("pid file says %d, want the new process %d", got, newPid)
	}

	// Draining: the old process still answers on its connection, from its
	// own ledger. This top-up misses the snapshot and is lost with the old
	// process: the weakness of this mode, not a fault of the test.
	c.Ask(t, "VERSION 3", fmt.Sprintf("VERSION 3 v1.0.0 %d", old))
	c.Ask(t, "TOPUP 4 alice 5", "OK 4 75")

	// A new connection reaches the new process, which has the snapshot.
	n := pdftest.Dial(t, p.addr)
	n.Ask(t, "VERSION 1", fmt.Sprintf("VERSION 1 v2.0.0 %d", newPid))
	n.Ask(t, "BALANCE 2 alice", "BAL 2 70")

	// At the end of the drain the old process closes the connection.
	c.ClosedByServer(t)
	line := p.logs.await(t, mark, "drain done", old)
	if field(line, "closed") != "1" {
		t.Fatalf("drain done: %q, want 1 connection closed", line)
	}
	if took, err := time.ParseDuration(field(line, "took")); err != nil || took < drain {
		t.Fatalf("drain took %q, want at least the drain timeout %v", field(line, "took"), drain)
	}
	if err := <-p.done; err != nil {
		t.Fatalf("old process: %v", err)
	}
	n.Ask(t, "BALANCE 3 alice", "BAL 3 70")
}

// TestUpgradeModeRestart: on SIGHUP the process closes its listener and
// connections, saves the ledger and executes the binary again. The same
// pid serves the saved balances, with no fd of the old image left.
func TestUpgradeModeRestart(t *testing.T) {
	p := startPDF(t, modeRestart)
	pid := p.pid
	before := fds(t, pid)
	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	c.Ask(t, "CHARGE 2 alice 30", "OK 2 70")

	p.setVersion(t, "v2")
	mark := p.logs.len()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.ClosedByServer(t)
	done := p.logs.await(t, mark, "upgrade complete", pid)
	if field(done, "mode") != modeRestart {
		t.Fatalf("upgrade complete in mode %q, want %q", field(done, "mode"), modeRestart)
	}
	if got := p.readPidfile(t); got != pid {
		t.Fatalf("pid file says %d, want %d still", got, pid)
	}
	// The new image opens what the old one did when it started, and
	// nothing more; the pipe the test left it as fd 3 is gone too.
	after := fds(t, pid)
	if !slices.ContainsFunc(before, func(f string) bool { return strings.HasPrefix(f, "3 -> pipe:") }) {
		t.Fatalf("fd 3 is not the test's pipe: %v", before)
	}
	if i := slices.IndexFunc(after, func(f string) bool { return fdKind(f) == "pipe" }); i >= 0 {
		t.Fatalf("fd %s survived the restart", after[i])
	}
	kinds := map[string]int{}
	for _, f := range before {
		kinds[fdKind(f)]++
	}
	for _, f := range after {
		if kinds[fdKind(f)]--; kinds[fdKind(f)] < 0 {
			t.Fatalf("fd %s is new after the restart\nbefore:\n%s\nafter:\n%s",
				f, strings.Join(before, "\n"), strings.Join(after, "\n"))
		}
	}
	if left, _ := filepath.Glob(filepath.Join(p.dir, "handoff-*")); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}

	n := pdftest.Dial(t, p.addr)
	n.Ask(t, "VERSION 1", fmt.Sprintf("VERSION 1 v2.0.0 %d", pid))
	n.Ask(t, "BALANCE 2 alice", "BAL 2 70")
	select {
	case err := <-p.done:
		t.Fatalf("the process exited: %v", err)
	default:
	}
}

func TestUpgradeModeFlags(t *testing.T) {
	tests := []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"-upgrade-mode", "full"}, true},
		{[]string{"-upgrade-mode", "listeners", "-state", "s"}, true},
		{[]string{"-upgrade-mode", "restart", "-state", "s"}, true},
		{[]string{"-upgrade-mode", "listeners"}, false},
		{[]string{"-upgrade-mode", "restart"}, false},
		{[]string{"-upgrade-mode", "reload", "-state", "s"}, false},
	}
	for _, tt := range tests {
		c, err := parseFlags(tt.args)
		if err != nil {
			t.Fatalf("parseFlags(%q): %v", tt.args, err)
		}
		if err := c.check(); (err == nil) != tt.ok {
			t.Errorf("check(%q) = %v, want ok %v", tt.args, err, tt.ok)
		}
	}
	c, _ := parseFlags([]string{"-drain-timeout", "300ms"})
	if c.upgradeMode != modeFull || c.drainTimeout != 300*time.Millisecond {
		t.Fatalf("parseFlags = %+v", c)
	}
	if c, _ := parseFlags(nil); c.drainTimeout != 5*time.Second {
		t.Fatalf("default drain timeout %v", c.drainTimeout)
	}
	// Refused before anything starts.
	if code := Run("v1.0.0", ledger.NewV1(), []string{"-upgrade-mode", "restart"}); code != 2 {
		t.Fatalf("Run without -state in restart mode = %d, want 2", code)
	}
}
