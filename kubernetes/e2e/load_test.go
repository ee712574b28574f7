//go:build e2epod

package e2e

// The clients of the takeover scenarios: pdfload (examples/pdf's load
// checker, every reply checked against its model), a witness connection
// asked after each takeover who answers it, a connection stuck on a reply
// its client does not read, and wrk for httpd.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// load is pdfload running in the pod's network namespace until its stdin
// closes.
type load struct {
	cmd          *exec.Cmd
	stdin        io.WriteCloser
	out, err     bytes.Buffer
	conns, churn int
}

// report is what the scenarios read of pdfload's JSON report.
type report struct {
	Conns       int               `json:"conns"`
	Sent        uint64            `json:"requests_sent"`
	RepliesOK   uint64            `json:"replies_ok"`
	Mismatches  uint64            `json:"mismatches"`
	Unexpected  uint64            `json:"unexpected"`
	Missing     uint64            `json:"missing"`
	Stalled     uint64            `json:"stalled"`
	Dropped     uint64            `json:"dropped_conns"`
	Refused     uint64            `json:"refused_dials"`
	ChurnOK     uint64            `json:"churn_ok"`
	Versions    map[string]uint64 `json:"versions"`
	FinalOK     int               `json:"final_ok"`
	FinalFailed int               `json:"final_failed"`
	Errors      []string          `json:"errors"`
	Pass        bool              `json:"ok"`
}

// startLoad runs pdfload with conns persistent pipelining connections
// and churn new ones a second, and waits until ctr serves them all. The
// stall timeout is long: a takeover pauses every connection, and a loaded
// machine slows it.
func (p *pair) startLoad(t *testing.T, ctr string, conns, churn int, stall time.Duration) *load {
	t.Helper()
	l := &load{conns: conns, churn: churn}
	l.cmd = p.inPod(pdfload, "-addr", "127.0.0.1:7070", "-conns", strconv.Itoa(conns), "-rate", "1000",
		"-churn", strconv.Itoa(churn), "-stall-timeout", stall.String(), "-json", "-until-stdin-eof",
		"-shared-pids") // every process is pid 1 in its container
	l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.err
	var err error
	if l.stdin, err = l.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.stdin.Close(); l.cmd.Wait() })
	waitFor(t, fmt.Sprintf("%d connections on %s", conns, ctr), 60*time.Second, func() (bool, string) {
		n := connsOf(t, ctr)
		return n >= conns, fmt.Sprintf("%d connections", n)
	})
	return l
}

// finish ends the load and checks its verdict: every request answered
// exactly once and right, no connection dropped, stalled or dialled
// again, and the end-of-run check of every persistent connection (its
// balances, and WHOAMI's count of what it sent, which the server's
// session carries from process to process) passed.
func (l *load) finish(t *testing.T) report {
	t.Helper()
	l.stdin.Close()
	err := l.cmd.Wait()
	var r report
	if jerr := json.Unmarshal(l.out.Bytes(), &r); jerr != nil {
		t.Fatalf("pdfload: %v, its report: %v\n%s\n%s", err, jerr, l.out.String(), l.err.String())
	}
	t.Logf("pdfload: conns=%d sent=%d ok=%d churn_ok=%d versions=%v final_ok=%d", r.Conns, r.Sent, r.RepliesOK,
		r.ChurnOK, r.Versions, r.FinalOK)
	if err != nil || !r.Pass || r.Mismatches+r.Unexpected+r.Missing+r.Stalled+r.Dropped+r.Refused != 0 ||
		r.FinalFailed != 0 || r.FinalOK != l.conns || r.Conns != l.conns || r.RepliesOK == 0 || (r.ChurnOK == 0) != (l.churn == 0) {
		t.Errorf("pdfload (exit %v): want every reply right and once, %d connections kept from first to last:\n%s\n%s",
			err, l.conns, l.out.String(), l.err.String())
	}
	return r
}

// connsOf is the number of connections ctr's process serves.
func connsOf(t *testing.T, ctr string) int {
	t.Helper()
	out, err := podman("exec", ctr, "/bin/handoffctl", "status", "-socket", "/tmp/handoff.ctl")
	if err != nil {
		t.Fatalf("status of %s: %v", ctr, err)
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "conns:" {
			k, _ := strconv.Atoi(f[2])
			n += k
		}
	}
	return n
}

// witness is one pdf connection the test holds through every takeover.
type witness struct {
	c    *net.TCPConn
	r    *bufio.Reader
	sent int
}

func (p *pair) witness(t *testing.T) *witness {
	t.Helper()
	c := p.dial(t, "127.0.0.1:7070")
	w := &witness{c: c, r: bufio.NewReader(c)}
	w.ask(t, "HELLO witness", "WELCOME witness")
	return w
}

// ask sends req and fails unless the reply is want.
func (w *witness) ask(t *testing.T, req, want string) {
	t.Helper()
	if got := w.send(t, req); got != want {
		t.Fatalf("witness: %q answered %q, want %q", req, got, want)
	}
}

func (w *witness) send(t *testing.T, req string) string {
	t.Helper()
	w.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(w.c, req+"\n"); err != nil {
		t.Fatalf("witness: %v (the connection did not survive)", err)
	}
	line, err := w.r.ReadString('\n')
	if err != nil {
		t.Fatalf("witness: %q: %v (the connection did not survive)", req, err)
	}
	w.sent++
	return strings.TrimSuffix(line, "\n")
}

// version checks that version answers the witness now, on the connection
// it opened first, and that the server's session counted every request
// it sent before: the same TCP connection, moved whole.
func (w *witness) version(t *testing.T, version string) {
	t.Helper()
	n := w.sent
	w.ask(t, fmt.Sprintf("WHOAMI w%d", n), fmt.Sprintf("YOU w%d witness %d", n, n))
	// Every process is pid 1 in its container: the version tells them apart.
	w.ask(t, fmt.Sprintf("VERSION w%d", n+1), fmt.Sprintf("VERSION w%d %s 1", n+1, version))
}

// stuck is a connection whose requests the server answers into a client
// that reads nothing: its handler ends up blocked writing, and a takeover
// waits for it to park (-park-timeout) until the test reads.
type stuck struct {
	c     *net.TCPConn
	wrote chan error
}

// stuckLines is how many empty lines the stuck connection sends: each is
// answered "ERR - empty-line" (17 bytes for 1), so their replies are more
// than twice what the client's small receive buffer and the server's
// largest send buffer (tcp_wmem's 4 MiB) can hold, while the requests fit
// in the buffers the other way: the handler must block on a reply.
const stuckLines = 600_000

const stuckReply = "ERR - empty-line\n"

func (p *pair) stuckConn(t *testing.T) *stuck {
	t.Helper()
	s := &stuck{c: p.dialBuf(t, "127.0.0.1:7070", 4096), wrote: make(chan error, 1)}
	go func() {
		_, err := s.c.Write(bytes.Repeat([]byte("\n"), stuckLines))
		s.wrote <- err
	}()
	// The handler is blocked once the server's end keeps unread requests
	// and nothing moves: the same queues seen several times in a row.
	port := s.c.LocalAddr().(*net.TCPAddr).Port
	var last string
	same := 0
	waitFor(t, "the stuck connection's handler blocked", 120*time.Second, func() (bool, string) {
		out, err := p.inPod("ss", "-tnH", "state", "established", fmt.Sprintf("( sport = :7070 and dport = :%d )", port)).Output()
		if err != nil {
			t.Fatalf("ss: %v", err)
		}
		f := strings.Fields(string(out))
		if len(f) < 2 || f[0] == "0" || string(out) != last {
			same, last = 0, string(out)
			return false, string(out)
		}
		same++
		return same >= 5, string(out)
	})
	t.Logf("stuck connection: the server's end holds (Recv-Q Send-Q) %s", strings.Join(strings.Fields(last)[:2], " "))
	return s
}

// finish reads every reply: all of them, once.
func (s *stuck) finish(t *testing.T) {
	t.Helper()
	s.c.SetDeadline(time.Now().Add(120 * time.Second))
	r := bufio.NewReader(s.c)
	for i := range stuckLines {
		if line, err := r.ReadString('\n'); line != stuckReply || err != nil {
			t.Fatalf("stuck connection: reply %d of %d is %q (%v), want %q", i+1, stuckLines, line, err, stuckReply)
		}
	}
	if err := <-s.wrote; err != nil {
		t.Fatal(err)
	}
	s.c.CloseWrite()
	if b, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("stuck connection: after %d replies, %q (%v), want the server's close", stuckLines, b, err)
	}
	t.Logf("stuck connection: %d requests, every one answered once", stuckLines)
}

// wrk runs wrk's keep-alive HTTP load in the pod until stopped.
type wrk struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func (p *pair) startWrk(t *testing.T, url string, conns int) *wrk {
	t.Helper()
	w := &wrk{}
	// Its own timeout, well above a takeover's pause: a reply that comes
	// late is counted, not dropped as an error.
	w.cmd = p.inPod("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d1h", "--timeout", "60s", url)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("wrk: %v (kubernetes/e2e/setup installs it)", err)
	}
	t.Cleanup(func() { w.cmd.Process.Kill(); w.cmd.Wait() })
	return w
}

// finish stops wrk as ^C does, after which it reports, and checks the
// report: requests made, no socket error, no answer other than 2xx/3xx.
func (w *wrk) finish(t *testing.T) {
	t.Helper()
	w.cmd.Process.Signal(syscall.SIGINT)
	err := w.cmd.Wait()
	out := w.out.String()
	t.Logf("wrk:\n%s", out)
	if err != nil || !strings.Contains(out, " requests in ") {
		t.Fatalf("wrk ended with %v and no report", err)
	}
	for _, bad := range []string{"Socket errors:", "Non-2xx or 3xx responses:"} {
		if strings.Contains(out, bad) {
			t.Errorf("wrk: %s", bad)
		}
	}
}
