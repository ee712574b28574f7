package app

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
)

// TestUpgradeDuringControlUpgrade: a SIGHUP while an upgrade that
// handoffctl started runs is refused, in every mode that uses the
// library's upgrades: the library guards them all (ErrUpgradeInProgress),
// not only those the application started. The SIGHUP is logged as
// refused, not as a failed upgrade (in rolling mode a failure would name
// this process in the marker again, while the running upgrade's new
// process may have claimed it). The running upgrade's binary waits for
// the test's word on a FIFO, so the SIGHUP lands inside it.
func TestUpgradeDuringControlUpgrade(t *testing.T) {
	ctlBin := buildCtl(t, t.TempDir())
	for _, mode := range []string{modeFull, modeRolling, modeListeners} {
		t.Run(mode, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "pdf.sock")
			p := startPDF(t, mode, "-control", sock)
			c := pdftest.Dial(t, p.addr)
			c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")

			g := newGate(t, p.dir)
			waits := script(t, p.dir, "waits", g.wait+"\nexit 3")

			mark := p.logs.len()
			// Not ctl: it may call t.Fatal, which only the test's goroutine may.
			up := exec.Command(ctlBin, "upgrade", "-socket", sock, "-binary", waits)
			var ctlErr strings.Builder
			up.Stderr = &ctlErr
			if err := up.Start(); err != nil {
				t.Fatal(err)
			}
			ctlDone := make(chan error, 1)
			go func() { ctlDone <- up.Wait() }()
			started := p.logs.await(t, mark, "handoff: upgrade phase", p.pid)
			if field(started, "phase") != "started" {
				t.Fatalf("first phase logged: %q", started)
			}
			hup(t, p.pid)
			refused := p.logs.await(t, mark, "upgrade refused: another upgrade is in progress", p.pid)
			if field(refused, "mode") != mode {
				t.Fatalf("refused: %q, want mode %s", refused, mode)
			}

			// The new binary reads, exits 3, and the upgrade handoffctl
			// started rolls back: the only failure this process logs.
			g.open(t)
			err := <-ctlDone
			if want := "handoffctl: upgrade rolled back (exited): "; up.ProcessState.ExitCode() != 1 ||
				!strings.HasPrefix(ctlErr.String(), want) {
				t.Fatalf("handoffctl upgrade: %v, stderr %q; want exit 1 and %q", err, ctlErr.String(), want)
			}
			c.Ask(t, "BALANCE 2 alice", "BAL 2 100")
			if n := strings.Count(p.logs.String(), `msg="upgrade failed; this process carries on"`); n != 0 {
				t.Fatalf("%d upgrades logged as failed by the application, want 0 (the SIGHUP was refused)", n)
			}
			p.stop(t, p.pid)
		})
	}
}

// gate holds a deployed script until the test opens it: the script runs
// wait, which reads a FIFO, and open writes to it. So a test knows that an
// upgrade is in progress for as long as it wants, without timing.
type gate struct {
	path string
	wait string // the shell command that waits
}

func newGate(t *testing.T, dir string) gate {
	t.Helper()
	g := gate{path: filepath.Join(dir, "release")}
	g.wait = "read line < " + g.path
	if err := syscall.Mkfifo(g.path, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Non-blocking: with no reader (it has exited) there is nothing to release.
		f, err := os.OpenFile(g.path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			f.Write([]byte("go\n"))
			f.Close()
		}
	})
	return g
}

// open lets the waiting script go on, once it reads.
func (g gate) open(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(g.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("go\n"))
	f.Close()
}
