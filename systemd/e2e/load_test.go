//go:build e2esystemd

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The load of every scenario: the demo's persistent connections and
// churn, at a rate two cores serve with room for systemd and an upgrade.
const (
	loadConns = 200
	loadRate  = 4000
	loadChurn = 50
	// loadStopTimeout bounds pdfload's drain and final check (10 s each
	// at most) after it is told to stop.
	loadStopTimeout = 45 * time.Second
)

// load is pdfload running on the host against the container's service:
// loadcheck's persistent and churn clients, each reply checked against
// its model. (The test cannot import loadcheck: it is internal to
// examples/pdf.)
type load struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout bytes.Buffer
	mu     sync.Mutex
	stderr []string // progress lines and complaints
	begun  chan struct{}
	done   chan struct{}
}

// report is the part of loadcheck.Report (pdfload -json) the tests judge.
type report struct {
	Conns        uint64            `json:"conns"`
	Sent         uint64            `json:"requests_sent"`
	RepliesOK    uint64            `json:"replies_ok"`
	Mismatches   uint64            `json:"mismatches"`
	Unexpected   uint64            `json:"unexpected"`
	Missing      uint64            `json:"missing"`
	Stalled      uint64            `json:"stalled"`
	DroppedConns uint64            `json:"dropped_conns"`
	RefusedDials uint64            `json:"refused_dials"`
	ChurnOK      uint64            `json:"churn_ok"`
	Pids         []int             `json:"pids"`
	ConnPidsMin  int               `json:"conn_pids_min"`
	ConnPidsMax  int               `json:"conn_pids_max"`
	Versions     map[string]uint64 `json:"versions"`
	MaxStall     time.Duration     `json:"max_stall_ns"`
	FinalOK      uint64            `json:"final_ok"`
	FinalFailed  uint64            `json:"final_failed"`
	Errors       []string          `json:"errors"`
	OK           bool              `json:"ok"`
}

func (r report) String() string {
	return fmt.Sprintf("%d conns, %d requests, %d replies ok, %d churn conns ok; mismatches %d, unexpected %d, missing %d, "+
		"stalled %d, dropped %d, refused %d; final check ok %d failed %d; pids %v (per conn %d..%d); versions %v; max stall %v",
		r.Conns, r.Sent, r.RepliesOK, r.ChurnOK, r.Mismatches, r.Unexpected, r.Missing, r.Stalled, r.DroppedConns,
		r.RefusedDials, r.FinalOK, r.FinalFailed, r.Pids, r.ConnPidsMin, r.ConnPidsMax, r.Versions, r.MaxStall)
}

// startLoad starts pdfload and returns once every persistent connection
// is dialled (pdfload writes its first progress line only then), so that
// each meets whatever the scenario does next.
func startLoad(t testing.TB) *load {
	t.Helper()
	l := &load{t: t, begun: make(chan struct{}), done: make(chan struct{})}
	l.cmd = exec.Command(filepath.Join(env.bin, "pdfload"), "-addr", addr,
		"-conns", strconv.Itoa(loadConns), "-rate", strconv.Itoa(loadRate), "-churn", strconv.Itoa(loadChurn),
		"-report-every", "1s", "-json", "-until-stdin-eof")
	l.cmd.Stdout = &l.stdout
	stderr, err := l.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if l.stdin, err = l.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatalf("start pdfload: %v", err)
	}
	t.Cleanup(l.kill)
	var once sync.Once
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			l.mu.Lock()
			l.stderr = append(l.stderr, s.Text())
			l.mu.Unlock()
			once.Do(func() { close(l.begun) })
		}
		l.cmd.Wait()
		close(l.done)
	}()
	select {
	case <-l.begun:
	case <-l.done:
		t.Fatalf("pdfload ended before its load began: %v\n%s", l.cmd.ProcessState, l.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("pdfload dialled no %d connections in 30s\n%s", loadConns, l.log())
	}
	return l
}

// stop ends the load and returns pdfload's report; the test fails if
// pdfload does not report, or its exit status contradicts the report.
// Judging the report is the caller's.
func (l *load) stop() report {
	l.t.Helper()
	l.stdin.Close()
	select {
	case <-l.done:
	case <-time.After(loadStopTimeout):
		l.kill()
		l.t.Fatalf("pdfload did not report within %v of the stop\n%s", loadStopTimeout, l.log())
	}
	var r report
	if err := json.Unmarshal(l.stdout.Bytes(), &r); err != nil {
		l.t.Fatalf("pdfload's report: %v (exit %v)\nstdout: %s\n%s", err, l.cmd.ProcessState, l.stdout.String(), l.log())
	}
	if code := l.cmd.ProcessState.ExitCode(); (code == 0) != r.OK || code > 1 {
		l.t.Fatalf("pdfload exited %d with a report that says ok=%v\n%s", code, r.OK, l.log())
	}
	return r
}

// requireExact fails the test unless the load saw no failure of any kind
// and every persistent connection lived to pass its final check.
func (l *load) requireExact(r report) {
	l.t.Helper()
	if !r.OK || r.Conns != loadConns || r.FinalOK != loadConns {
		l.t.Fatalf("load: want every reply exact and all %d connections alive to the final check; got %v\nerrors:\n  %s\npdfload's log:\n%s",
			loadConns, r, strings.Join(r.Errors, "\n  "), l.log())
	}
	l.t.Logf("load: %v", r)
}

// requirePids fails unless the processes that answered the load's
// VERSION requests are exactly want: a pid systemd never called MainPID
// must not serve.
func (l *load) requirePids(r report, want ...int) {
	l.t.Helper()
	w := slices.Sorted(maps.Keys(setOf(want)))
	if !slices.Equal(r.Pids, w) {
		l.t.Fatalf("load: VERSION replies named pids %v, want exactly the MainPIDs %v", r.Pids, w)
	}
}

func setOf(s []int) map[int]bool {
	m := map[int]bool{}
	for _, v := range s {
		m[v] = true
	}
	return m
}

func (l *load) log() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return tail(strings.Join(l.stderr, "\n"), 30)
}

// kill ends pdfload at once if it still runs.
func (l *load) kill() {
	select {
	case <-l.done:
	default:
		l.cmd.Process.Kill()
		<-l.done
	}
}
