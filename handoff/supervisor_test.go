//go:build linux

package handoff

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logSupervisor is a Supervisor that writes every call to the file
// envSupervisor names, one line each, "<pid> <what>...": the processes of
// a chain append to it in the order they call.
type logSupervisor struct{}

func testSupervisor() Supervisor {
	if os.Getenv(envSupervisor) == "" {
		return nil
	}
	return logSupervisor{}
}

func (logSupervisor) Sockets() ([]SupervisedSocket, error) { return nil, nil }

func (logSupervisor) Keep(rc syscall.RawConn, kind string, listening bool) error {
	supervisorLine(fmt.Sprintf("keep %t %s %s", listening, kind, fdState(rc)))
	return nil
}

func (logSupervisor) Release(rc syscall.RawConn, kind string, listening bool) error {
	supervisorLine(fmt.Sprintf("release %t %s %s", listening, kind, fdState(rc)))
	return nil
}

func (logSupervisor) Notify(n Notice) {
	supervisorLine(fmt.Sprintf("notice %s from=%d to=%d", n.Event, n.From, n.To))
}

// fdState says whether the socket is still open in this process: a
// supervisor can only take a copy of, or identify, an open one.
func fdState(rc syscall.RawConn) string {
	if err := rc.Control(func(uintptr) {}); err != nil {
		return "closed"
	}
	return "open"
}

// supervisorLine appends one line; O_APPEND keeps the processes' lines whole.
func supervisorLine(line string) {
	if os.Getenv(envSupervisor) == "" {
		return
	}
	f, err := os.OpenFile(os.Getenv(envSupervisor), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(strconv.Itoa(os.Getpid()) + " " + line + "\n")
}

// supLog is the supervisor log as the test reads it.
type supLog [][]string

func readSupLog(t *testing.T, path string) supLog {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out supLog
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		out = append(out, strings.Fields(l))
	}
	return out
}

// index returns the first line of pid that starts with words, or -1.
func (s supLog) index(pid int, words ...string) int {
	for i, l := range s {
		if l[0] == strconv.Itoa(pid) && len(l) > len(words) && strings.Join(l[1:1+len(words)], " ") == strings.Join(words, " ") {
			return i
		}
	}
	return -1
}

// count counts pid's lines that start with words, from line from on.
func (s supLog) count(from, pid int, words ...string) int {
	n := 0
	for _, l := range s[max(from, 0):] {
		if l[0] == strconv.Itoa(pid) && len(l) > len(words) && strings.Join(l[1:1+len(words)], " ") == strings.Join(words, " ") {
			n++
		}
	}
	return n
}

// TestSupervisorFollowsUpgrades: a Supervisor is told, in the order that
// lets it follow the service's main process, that the first process serves,
// that it upgrades and to which pid it commits, and that the new process
// serves, before the old one exits. Sockets are kept when made or accepted
// and released while still open when the application closes them; a
// handover releases nothing (the store would lose every connection the new
// process serves) and the new process keeps nothing twice. A rollback and
// a stop are told too.
func TestSupervisorFollowsUpgrades(t *testing.T) {
	logPath := t.TempDir() + "/supervisor.log"
	h := startServer(t, envSupervisor+"="+logPath)
	p1 := h.pid
	l := startLoad(t, h.addr, 20)
	l.waitRounds(200)
	p2, fail := h.upgrade()
	if fail != "" {
		t.Fatal(fail)
	}
	l.waitServedBy(p2)
	l.stop()
	for _, cl := range l.conns {
		cl.c.Close()
	}
	s := awaitSupLog(t, logPath, func(s supLog) bool { return s.count(0, p2, "release", "false") >= 20 })

	if i := s.index(p1, "keep", "true"); i != 0 {
		t.Fatalf("line %d is the first process keeping its listener, want it first; log:\n%s", i, s)
	}
	serving1, upgrading := s.index(p1, "notice", "serving"), s.index(p1, "notice", "upgrading")
	committing := s.index(p1, "notice", "committing", "from=0", "to="+strconv.Itoa(p2))
	serving2 := s.index(p2, "notice", "serving", "from="+strconv.Itoa(p1))
	exit1 := s.index(p1, "exit")
	if serving1 < 0 || !(serving1 < upgrading && upgrading < committing && committing < serving2 && serving2 < exit1) {
		t.Fatalf("notices out of order: serving %d, upgrading %d, committing %d, new serving %d, old exit %d; log:\n%s",
			serving1, upgrading, committing, serving2, exit1, s)
	}
	if n := s.count(0, p1, "keep", "false"); n < 20 {
		t.Fatalf("the first process kept %d connections, want at least the 20 persistent ones", n)
	}
	if n := s.count(committing, p1, "release"); n != 0 {
		t.Fatalf("the old process released %d sockets after it committed; log:\n%s", n, s)
	}
	if n := s.count(0, p2, "keep", "true"); n != 0 {
		t.Fatal("the new process kept the listener it inherited again")
	}
	for _, l := range s {
		if l[1] == "keep" || l[1] == "release" {
			if l[len(l)-1] != "open" {
				t.Fatalf("a socket was kept or released after it was closed: %v", l)
			}
		}
	}

	h.setFault("exit:hello")
	if p, fail := h.upgrade(); p != 0 || fail == "" {
		t.Fatalf("an upgrade into a failing process committed (pid %d)", p)
	}
	h.kill(p2, syscall.SIGTERM)
	h.expect("saved")
	s = readSupLog(t, logPath)
	rolled, stopping := s.index(p2, "notice", PhaseRolledBack), s.index(p2, "notice", "stopping")
	if rolled < 0 || stopping < rolled {
		t.Fatalf("rollback at line %d, stop at %d; log:\n%s", rolled, stopping, s)
	}
}

// awaitSupLog waits, bounded, until the log satisfies ok.
func awaitSupLog(t *testing.T, path string, ok func(supLog) bool) supLog {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); ; {
		s := readSupLog(t, path)
		if ok(s) {
			return s
		}
		if time.Now().After(end) {
			t.Fatalf("supervisor log never got there:\n%s", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s supLog) String() string {
	var b strings.Builder
	for _, l := range s {
		b.WriteString(strings.Join(l, " ") + "\n")
	}
	return b.String()
}
