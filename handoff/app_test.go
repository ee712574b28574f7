//go:build linux

package handoff

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testApp is a server's Options.App: the default (the test binary's), or
// another application's for a new process whose fault is "other-app".
func testApp(p *proc) string {
	if p.isNew() && p.fault() == "other-app" {
		return "other-app"
	}
	return ""
}

// testLoad is a server's Options.LoadState: none for a new process whose
// fault is "no-loadstate".
func testLoad(p *proc, srv *lineServer) func(io.Reader) error {
	if p.isNew() && p.fault() == "no-loadstate" {
		return nil
	}
	return srv.load
}

// control sends one request line to a control socket and returns its
// answers, read until the server closes the connection.
func control(t *testing.T, path, line string) []map[string]any {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute)) // a safety net: the answer ends each upgrade
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("answer %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("answers %v: %v", out, err)
	}
	return out
}

// upgradeVia runs an upgrade through the control socket and returns
// its result line.
func upgradeVia(t *testing.T, path, args string) map[string]any {
	t.Helper()
	ans := control(t, path, "HANDOFF-CONTROL 1 upgrade"+args)
	if len(ans) == 0 || ans[len(ans)-1]["type"] != "result" {
		t.Fatalf("upgrade%s: answers %v, want a result last", args, ans)
	}
	return ans[len(ans)-1]
}

// TestOtherAppRefused: a new binary of another application (Options.App)
// is refused at HELLO, whatever it would have served: the upgrade rolls
// back with a reason naming both applications, counted as other_app, and
// the old process serves every connection on, each where it stood. The
// operator can switch applications for one upgrade by naming the new one
// (control socket app=, handoffctl upgrade -app); a wrong name is refused
// too.
func TestOtherAppRefused(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl")
	h := startInProcess(t, envControl+"="+ctl)
	old := h.pid
	kept := keptConn(t, h.addr, 3, true)
	l := startLoad(t, h.addr, 20)
	l.waitRounds(50)

	h.setFault("other-app")
	p, fail := h.upgrade()
	if p != 0 {
		t.Fatalf("a new process of another application (pid %d) took over", p)
	}
	own := defaultApp()
	for _, want := range []string{`it is "other-app"`, fmt.Sprintf("this process is %q", own), "handoffctl upgrade -app other-app"} {
		if !strings.Contains(fail, want) {
			t.Fatalf("rolled back for %q, want a reason saying %q", fail, want)
		}
	}
	h.stopLogged("cause=other_app") // the log line says why
	st := control(t, ctl, "HANDOFF-CONTROL 1 status")
	if rb := st[0]["totals"].(map[string]any)["rolled_back"].(map[string]any); rb[CauseOtherApp] != 1.0 {
		t.Fatalf("status totals rolled back %v, want %s: 1", rb, CauseOtherApp)
	}
	if got := h.pidFile(); got != old {
		t.Fatalf("PID file names %d after the rollback, want the old process %d", got, old)
	}
	// The connections were never touched: the same process answers,
	// their counts going on.
	if err := kept.round(3, true); err != nil {
		t.Fatalf("kept connection after the rollback: %v", err)
	}
	if len(kept.pids) != 1 || !kept.pids[strconv.Itoa(old)] {
		t.Fatalf("kept connection served by %v, want the old process %d alone", kept.pids, old)
	}
	l.waitRounds(50)

	// The operator names an application, but not the new binary's.
	r := upgradeVia(t, ctl, " app=third-app")
	if r["committed"] != false || r["cause"] != CauseOtherApp || !strings.Contains(r["reason"].(string), `the upgrade expected "third-app"`) {
		t.Fatalf("upgrade with app=third-app: %v, want it rolled back for another application", r)
	}
	// The operator names the new binary's application: it takes over.
	r = upgradeVia(t, ctl, " app=other-app")
	if r["committed"] != true {
		t.Fatalf("upgrade with app=other-app: %v, want it committed", r)
	}
	p, fail = h.awaitUpgrade()
	if p == 0 {
		t.Fatalf("upgrade with app=other-app: %s", fail)
	}
	if err := kept.round(3, true); err != nil {
		t.Fatalf("kept connection after the switch: %v", err)
	}
	if !kept.pids[strconv.Itoa(p)] {
		t.Fatalf("kept connection served by %v after the switch, want the new process %d", kept.pids, p)
	}
	l.waitServedBy(p)
	l.stop()
	l.requireAllOn(old, p)
}

// TestStateNeedsLoadState: a new process without LoadState refuses an
// old process that sends its state, at PLAN, before any connection is
// parked: the upgrade rolls back, the old process serves on, and an
// upgrade to a process that loads the state commits.
func TestStateNeedsLoadState(t *testing.T) {
	for _, mode := range []struct{ name, env string }{{"all-at-once", ""}, {"rolling", envRolling + "=1"}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			h := startInProcess(t, mode.env)
			old := h.pid
			kept := keptConn(t, h.addr, 5, true)
			l := startLoad(t, h.addr, 20)
			l.waitRounds(50)

			h.setFault("no-loadstate")
			p, fail := h.upgrade()
			if p != 0 {
				t.Fatalf("a new process without LoadState (pid %d) took over; the state was dropped", p)
			}
			if !strings.Contains(fail, "rejected by peer") || !strings.Contains(fail, "Options.LoadState is not set") {
				t.Fatalf("rolled back for %q, want the new process's refusal for its missing LoadState", fail)
			}
			h.stopLogged("upgrade failed") // the old process's log has its phases before this line
			if strings.Contains(h.logs.String(), "phase=park") {
				t.Fatal("the old process parked its connections before the refusal")
			}
			if err := kept.round(3, true); err != nil {
				t.Fatalf("kept connection after the rollback: %v", err)
			}
			if len(kept.pids) != 1 || !kept.pids[strconv.Itoa(old)] {
				t.Fatalf("kept connection served by %v, want the old process %d alone", kept.pids, old)
			}
			l.waitRounds(50)

			h.setFault("")
			p, fail = h.upgrade()
			if p == 0 {
				t.Fatalf("upgrade to a process with LoadState: %s", fail)
			}
			l.waitServedBy(p)
			l.stop()
			l.requireAllOn(old, p)
		})
	}
}

// TestDefaultApp: Options.App's default is the main package's import
// path, the same for every binary built from it.
func TestDefaultApp(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Skip("no build information")
	}
	if got := defaultApp(); got != bi.Path {
		t.Fatalf("default App %q, want the main package's path %q", got, bi.Path)
	}
	// A test binary built by Go 1.23 names no path (later ones name the
	// test package); a program names its main package in every version.
	if bi.Path != "" && bi.Path != "github.com/handoff-dev/handoff/handoff.test" {
		t.Fatalf("build information names %q, want the test binary's package", bi.Path)
	}
	for name, ok := range map[string]bool{
		"pdf": true, "example.com/shop/cmd/shopd": true, own(maxAppName): true,
		own(maxAppName + 1): false, "two words": false, "tab\there": false, "nl\n": false, "\xff": false,
	} {
		if err := checkAppName(name); (err == nil) != ok {
			t.Errorf("checkAppName(%q): %v, want ok=%v", name, err, ok)
		}
	}
}

func own(n int) string { return strings.Repeat("a", n) }
