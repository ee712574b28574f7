//go:build linux

package handoff

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// envPrecopy gives every server of the chain Options.Precopy (testPrecopy)
// and makes it say which state functions it calls ("call <pid> <name>",
// harness.calls).
const envPrecopy = "HANDOFF_TEST_PRECOPY"

// testPrecopy is the test server's Options.Precopy with envPrecopy: Save
// sends the total it reads, and the changes since are the requests
// served since (the total only grows), which SaveChanges sends and
// LoadChanges adds. A new process whose fault is "no-precopy" has none.
func testPrecopy(p *proc, srv *lineServer) *Precopy {
	if p.getenv(envPrecopy) == "" || (p.isNew() && p.fault() == "no-precopy") {
		return nil
	}
	return &Precopy{Save: srv.precopySave, SaveChanges: srv.saveChanges, Load: srv.precopyLoad,
		LoadChanges: srv.loadChanges}
}

// called says "call <pid> <name>" with envPrecopy.
func (p *proc) called(name string) {
	if p.getenv(envPrecopy) != "" {
		p.report("call %d %s", p.pid, name)
	}
}

// precopySave is Precopy.Save. The old process's faults at "precopy":
// "panic" (oldFault), "fail" (an error), "short" (the total cut short).
func (s *lineServer) precopySave(w io.Writer) error {
	s.p.called("precopy-save")
	s.p.oldFault("precopy")
	b, _ := os.ReadFile(filepath.Join(s.p.getenv("TMPDIR"), "oldfault"))
	fault := strings.TrimSpace(string(b))
	if fault == "fail:precopy" {
		return errors.New("pre-copy save fails on purpose")
	}
	s.mu.Lock()
	s.base = s.total
	total := binary.BigEndian.AppendUint64(nil, s.base)
	s.mu.Unlock()
	if fault == "short:precopy" {
		total = total[:3]
	}
	_, err := w.Write(total)
	return err
}

func (s *lineServer) saveChanges(w io.Writer) error {
	s.p.called("save-changes")
	s.mu.Lock()
	changed := s.total - s.base
	s.mu.Unlock()
	return binary.Write(w, binary.BigEndian, changed)
}

// precopyLoad is Precopy.Load: once it has read the total, Save has read
// it too, and the new process reaches the step "precopy-load" (a pause
// there holds it).
func (s *lineServer) precopyLoad(r io.Reader) error {
	s.p.called("precopy-load")
	switch s.p.fault() {
	case "reject-precopy":
		return errors.New("pre-copy rejected on purpose")
	case "panic:precopy-load":
		panic("pre-copy load panics on purpose")
	}
	var total uint64
	if err := binary.Read(r, binary.BigEndian, &total); err != nil {
		return err
	}
	s.mu.Lock()
	s.total = total
	s.mu.Unlock()
	s.p.step("precopy-load")
	return nil
}

func (s *lineServer) loadChanges(r io.Reader) error {
	s.p.called("load-changes")
	var changed uint64
	if err := binary.Read(r, binary.BigEndian, &changed); err != nil {
		return err
	}
	s.mu.Lock()
	s.total += changed
	s.mu.Unlock()
	return nil
}

// requireCalls checks that the upgrade from old to next called exactly
// the state functions want, "<name> old" or "<name> new", and forgets
// them.
func (h *harness) requireCalls(old, next int, want ...string) {
	h.t.Helper()
	r := strings.NewReplacer("old", strconv.Itoa(old), "new", strconv.Itoa(next))
	for i, w := range want {
		want[i] = r.Replace(w)
	}
	got := h.calls
	h.calls = nil
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		h.t.Fatalf("state functions called: %q, want %q", got, want)
	}
}

// readyTotal is the total the new process had once it served, as its
// "ready" event says.
func (h *harness) readyTotal() int {
	h.t.Helper()
	if len(h.ready) < 4 {
		h.t.Fatalf("ready event %q: no total", h.ready)
	}
	return atoi(h.ready[3])
}

// TestPrecopyMovesChanges: with Options.Precopy, the bulk of the state
// moves before the park and what changed since in the pause. The new
// process's Load is held once it has read the total (Save has read it
// too): meanwhile the old process parks nothing, serving a kept
// connection and a new one, whose requests change the total; the new
// process ends with the final total, through Save, Load, SaveChanges and
// LoadChanges, never SaveState or LoadState.
func TestPrecopyMovesChanges(t *testing.T) {
	h := startServer(t, envPrecopy+"=1", envPause+"=precopy-load")
	old := h.pid
	kept := keptConn(t, h.addr, 5, false)
	if err := h.kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	next := h.awaitPaused("precopy-load")
	// Load has not returned: every connection is still served, by the
	// old process, and a new one is taken.
	if err := kept.round(3, false); err != nil {
		t.Fatalf("kept connection while the new process loads the pre-copy: %v (parked?)", err)
	}
	fresh := dialConn(t, h.addr)
	if err := fresh.round(2, false); err != nil {
		t.Fatalf("new connection while the new process loads the pre-copy: %v", err)
	}
	for name, c := range map[string]*conn{"kept": kept, "new": fresh} {
		if len(c.pids) != 1 || !c.pids[strconv.Itoa(old)] {
			t.Fatalf("%s connection served by %v during the pre-copy, want the old process %d", name, c.pids, old)
		}
	}
	if strings.Contains(h.logs.String(), "phase=park") {
		t.Fatal("the old process parked before the new process's Load returned")
	}
	h.release("precopy-load")
	p, fail := h.awaitUpgrade()
	if p != next {
		t.Fatalf("upgrade: pid %d (%s), want %d", p, fail, next)
	}
	if got := h.readyTotal(); got != 10 {
		t.Fatalf("new process's total %d, want 10: 5 before the upgrade, 5 during the pre-copy", got)
	}
	h.requireCalls(old, p, "precopy-save old", "save-changes old", "precopy-load new", "load-changes new")
	for name, c := range map[string]*conn{"kept": kept, "new": fresh} {
		if err := c.round(2, true); err != nil {
			t.Fatalf("%s connection after the upgrade: %v", name, err)
		}
		if !c.pids[strconv.Itoa(p)] {
			t.Fatalf("%s connection served by %v after the upgrade, want the new process %d", name, c.pids, p)
		}
	}
	h.stopLogged("phase=precopy")
	lines := strings.Split(h.logs.String(), "\n")
	for _, w := range [][]string{
		{"handoff: upgrade phase", "phase=precopy", "to=" + strconv.Itoa(p), "bytes=8"},
		{"handoff: takeover phase", "phase=precopy", "bytes=8"},
	} {
		if !anyLineHasAll(lines, w) {
			t.Errorf("no log line with all of %q", w)
		}
	}
}

// TestPrecopyDeclined: a new process without Options.Precopy declines
// the pre-copy the old one offers, and the upgrade goes as without one:
// SaveState in the pause, LoadState.
func TestPrecopyDeclined(t *testing.T) {
	h := startServer(t, envPrecopy+"=1")
	old := h.pid
	kept := keptConn(t, h.addr, 4, false)
	h.setFault("no-precopy")
	p, fail := h.upgrade()
	if p == 0 {
		t.Fatalf("upgrade to a process without Precopy: %s", fail)
	}
	if got := h.readyTotal(); got != 4 {
		t.Fatalf("new process's total %d, want 4", got)
	}
	h.requireCalls(old, p, "save old", "load new")
	h.stopLogged("declined the pre-copy")
	kept.requireServedBy(t, p, "after the upgrade")
}

// TestPrecopyFailures: a pre-copy that fails, in either process, rolls
// the upgrade back before anything is parked; the old process serves on
// with its state whole, and the next upgrade moves it. A Load that hangs
// ends at the upgrade's timeout, not at the shorter pause timeout: the
// pre-copy is outside the pause.
func TestPrecopyFailures(t *testing.T) {
	for _, c := range []struct {
		name, fault, oldFault, says string
		timeout                     string // the failing upgrade's UpgradeRequest.Timeout
		inProcess                   bool
	}{
		{name: "load fails", fault: "reject-precopy", says: "pre-copy rejected on purpose"},
		{name: "load panics", fault: "panic:precopy-load", says: "pre-copy load panicked", inProcess: true},
		{name: "load hangs", fault: "hang:precopy-load", says: "upgrade timed out", timeout: "4s"},
		{name: "stream cut short", oldFault: "short:precopy", says: "unexpected EOF", inProcess: true},
		{name: "save fails", oldFault: "fail:precopy", says: "pre-copy save fails on purpose", inProcess: true},
		{name: "save panics", oldFault: "panic:precopy", says: "pre-copy save panicked", inProcess: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// The pause timeout is a safety net but for "load hangs",
			// where it must be shorter than the upgrade's and still hold
			// the good upgrade's pause.
			start := startServer
			if c.inProcess {
				start = startInProcess
			}
			h := start(t, envPrecopy+"=1", envPauseTimeout+"=2s")
			old := h.pid
			kept := keptConn(t, h.addr, 3, false)
			h.setFault(c.fault)
			h.setOldFault(c.oldFault)
			h.setUpgradeTimeout(c.timeout)
			if p, fail := h.upgrade(); p != 0 {
				t.Fatalf("upgrade with a failing pre-copy committed to %d", p)
			} else if !strings.Contains(fail, c.says) {
				t.Fatalf("rolled back for %q, want %q", fail, c.says)
			}
			h.stopLogged("handoff: upgrade failed")
			lines := strings.Split(h.logs.String(), "\n")
			if c.fault == "reject-precopy" && !anyLineHasAll(lines, []string{"handoff: upgrade failed", "cause=rejected", c.says}) {
				t.Error("the old process's log does not say the new one rejected the pre-copy (cause=rejected)")
			}
			if strings.Contains(h.logs.String(), "phase=park") {
				t.Fatal("the old process parked its connections before the pre-copy failed")
			}
			if err := kept.round(3, false); err != nil {
				t.Fatalf("kept connection after the rollback: %v", err)
			}
			if len(kept.pids) != 1 || !kept.pids[strconv.Itoa(old)] {
				t.Fatalf("kept connection served by %v, want the old process %d alone", kept.pids, old)
			}
			h.setFault("")
			h.setOldFault("")
			h.setUpgradeTimeout("")
			h.calls = nil
			p, fail := h.upgrade()
			if p == 0 {
				t.Fatalf("upgrade after the failed one: %s", fail)
			}
			if got := h.readyTotal(); got != 6 {
				t.Fatalf("new process's total %d, want 6: 3 before the failed upgrade, 3 after", got)
			}
			h.requireCalls(old, p, "precopy-save old", "save-changes old", "precopy-load new", "load-changes new")
		})
	}
}

// previousRelease is a new process of the release before the pre-copy,
// as far as PLAN: it greets the old process as that release does and
// refuses a PLAN with a flag other than STATE as that release's decoder
// does ("PLAN has unknown flags", ABORT), then exits.
func previousRelease(p *proc) {
	fc, err := net.FileConn(p.inh.channel)
	if err != nil {
		p.report("error %d previous release: %v", p.pid, err)
		p.exit(1)
	}
	ch := wire.NewChannel(fc.(*net.UnixConn))
	hello := wire.Hello{Version: wire.Version, PID: uint32(p.pid), FdLimit: 1 << 16, FdOpen: 64,
		AppVersion: "previous", App: defaultApp()}
	var theirs wire.Hello
	err = ch.Send(hello, nil)
	if err == nil {
		err = ch.Expect(&theirs)
	}
	var m wire.Msg
	if err == nil {
		m, err = ch.RecvNoFds()
	}
	if err == nil {
		err = m.ExpectType(wire.TypePlan)
	}
	if err == nil && len(m.Payload) == 6 && m.Payload[5]&^1 != 0 {
		err = wire.Errorf("PLAN has unknown flags %#x", m.Payload[5])
	}
	if err == nil {
		err = errors.New("PLAN without a pre-copy: this test wants one")
	}
	_ = ch.Send(wire.Abort{Reason: err.Error()}, nil)
	ch.Close()
	p.report("error %d %v", p.pid, err)
	p.exit(1)
}

// TestPrecopyToPreviousRelease: a new binary of the release before the
// pre-copy refuses the PLAN that offers one; the upgrade rolls back (a
// rejection), the old process serves on, and an upgrade to a binary of
// this release moves the state.
func TestPrecopyToPreviousRelease(t *testing.T) {
	h := startServer(t, envPrecopy+"=1")
	old := h.pid
	kept := keptConn(t, h.addr, 2, false)
	h.setFault("previous-release")
	if p, fail := h.upgrade(); p != 0 {
		t.Fatalf("upgrade to the previous release committed to %d", p)
	} else if !strings.Contains(fail, "PLAN has unknown flags 0x3") {
		t.Fatalf("rolled back for %q, want the previous release's refusal of the flag", fail)
	}
	h.stopLogged("handoff: upgrade failed")
	if !anyLineHasAll(strings.Split(h.logs.String(), "\n"), []string{"handoff: upgrade failed", "cause=rejected"}) {
		t.Error("the old process's log does not name the refusal a rejection (cause=rejected)")
	}
	if err := kept.round(2, false); err != nil || len(kept.pids) != 1 || !kept.pids[strconv.Itoa(old)] {
		t.Fatalf("kept connection after the rollback: served by %v, %v; want the old process %d", kept.pids, err, old)
	}
	h.setFault("")
	h.calls = nil
	p, fail := h.upgrade()
	if p == 0 {
		t.Fatalf("upgrade after the rollback: %s", fail)
	}
	if got := h.readyTotal(); got != 4 {
		t.Fatalf("new process's total %d, want 4", got)
	}
}

// TestPrecopyOnlyAllAtOnce: in Rolling mode, which sends its state while
// serving anyway, Precopy is never called: SaveState and LoadState are.
func TestPrecopyOnlyAllAtOnce(t *testing.T) {
	h := startInProcess(t, envPrecopy+"=1", envRolling+"=1")
	old := h.pid
	kept := keptConn(t, h.addr, 3, true)
	p, fail := h.upgrade()
	if p == 0 {
		t.Fatalf("rolling upgrade: %s", fail)
	}
	h.requireCalls(old, p, "save old", "load new")
	kept.requireServedBy(t, p, "after the upgrade")
}

// TestPrecopyOptionsChecked: a Precopy without one of its functions, or
// without SaveState and LoadState, is a configuration error of New.
func TestPrecopyOptionsChecked(t *testing.T) {
	f := func(io.Writer) error { return nil }
	g := func(io.Reader) error { return nil }
	whole := Precopy{Save: f, SaveChanges: f, Load: g, LoadChanges: g}
	for _, c := range []struct {
		name string
		opts Options
		says string
	}{
		{"no LoadChanges", Options{SaveState: f, LoadState: g,
			Precopy: &Precopy{Save: f, SaveChanges: f, Load: g}}, "Options.Precopy.LoadChanges is nil"},
		{"no Save", Options{SaveState: f, LoadState: g,
			Precopy: &Precopy{SaveChanges: f, Load: g, LoadChanges: g}}, "Options.Precopy.Save is nil"},
		{"no SaveState", Options{LoadState: g, Precopy: &whole}, "without SaveState and LoadState"},
		{"whole", Options{SaveState: f, LoadState: g, Precopy: &whole}, ""},
	} {
		o := c.opts
		o.Binary = "/bin/true"
		err := applyDefaults(&o)
		if c.says == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.says)
		}
	}
}

// TestPeerPrecopy: a peer (a process the old one did not start, as a new
// container is) takes the pre-copy as a child does: the bulk of the state
// before the park, what changed since in the pause, every request counted
// once; in one process and in processes of their own.
func TestPeerPrecopy(t *testing.T) {
	for name, start := range chains {
		t.Run(name, func(t *testing.T) {
			h := start(t, append(takeoverEnv(t.TempDir()), envPrecopy+"=1")...)
			old := h.pid
			kept := keptConn(t, h.addr, 5, false)
			p, fail := h.peer()
			if p == 0 {
				t.Fatalf("peer takeover with a pre-copy: %s", fail)
			}
			if got := h.readyTotal(); got != 5 {
				t.Fatalf("the peer's total %d, want 5", got)
			}
			h.requireCalls(old, p, "precopy-save old", "save-changes old", "precopy-load new", "load-changes new")
			kept.requireServedBy(t, p, "after the takeover")
			h.stopLogged("phase=precopy")
		})
	}
}
