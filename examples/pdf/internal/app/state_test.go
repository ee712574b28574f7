package app

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
)

// checkErr requires the err of a log line to name path, the file the user
// chose (not a temporary file beside it), and to say "statefile" at most
// once.
func checkErr(t *testing.T, line, path string) {
	t.Helper()
	err := field(line, "err")
	if !strings.Contains(err, path) || strings.Contains(err, ".tmp-") || strings.Count(err, "statefile:") > 1 {
		t.Fatalf("err %q: want the path %s, no temporary file, \"statefile:\" once at most", err, path)
	}
}

// refused requires p to refuse to start with exit code 1, and returns its
// "refusing to start" line.
func refused(t *testing.T, p *pdf) string {
	t.Helper()
	if code := p.exitCode(t); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	line := p.logs.await(t, 0, "refusing to start", p.pid)
	if strings.Contains(p.logs.String(), "msg=serving") {
		t.Fatal("it served before refusing")
	}
	return line
}

// mountTmpfs mounts a small tmpfs at dir, which only root can do.
func mountTmpfs(t *testing.T, dir string, flags uintptr) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, "size=256k"); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("cannot mount a tmpfs here (%v): needs root", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// TestStartRefusesUnwritableState: a server that could not save its ledger
// at the end must not take money at the start.
func TestStartRefusesUnwritableState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state func(t *testing.T, dir string) string
	}{
		{"missing directory", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "missing", "state")
		}},
		{"a file where the directory goes", func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, "file"), nil, 0o600)
			return filepath.Join(dir, "file", "state")
		}},
		// A read-only directory stops everyone but root; a read-only file
		// system stops root too.
		{"read-only file system", func(t *testing.T, dir string) string {
			ro := filepath.Join(dir, "ro")
			os.Mkdir(ro, 0o700)
			mountTmpfs(t, ro, unix.MS_RDONLY)
			return filepath.Join(ro, "state")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			state := tc.state(t, dir)
			checkErr(t, refused(t, launch(t, dir, "-state", state)), state)
		})
	}
}

// fault is a way for the final save to fail, and to be fixed, as root or
// not.
type fault struct {
	name  string
	dir   func(t *testing.T, dir string) string // where the state file goes
	cause func(t *testing.T, state string)
	fix   func(t *testing.T, state string)
}

var faults = []fault{
	{
		name: "a directory where the state file goes",
		dir:  func(t *testing.T, dir string) string { return dir },
		cause: func(t *testing.T, state string) {
			if err := os.Mkdir(state, 0o700); err != nil {
				t.Fatal(err)
			}
		},
		fix: func(t *testing.T, state string) { os.Remove(state) },
	},
	{
		name: "full disk",
		dir:  tmpfsDisk,
		cause: func(t *testing.T, state string) {
			f, err := os.Create(filepath.Join(filepath.Dir(state), "filler"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for {
				if _, err := f.Write(make([]byte, 4096)); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatal(err)
					}
					return
				}
			}
		},
		fix: func(t *testing.T, state string) { os.Remove(filepath.Join(filepath.Dir(state), "filler")) },
	},
	{
		name: "read-only disk",
		dir:  tmpfsDisk,
		cause: func(t *testing.T, state string) {
			if err := unix.Mount("", filepath.Dir(state), "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				t.Fatal(err)
			}
		},
		fix: func(t *testing.T, state string) {
			if err := unix.Mount("", filepath.Dir(state), "", unix.MS_REMOUNT, ""); err != nil {
				t.Fatal(err)
			}
		},
	},
}

// TestFinalSaveFailureKeepsServing: when the snapshot at SIGTERM fails,
// the ledger exists only in memory, so the server carries on and says so
// loudly; once the cause is fixed, the next SIGTERM saves it, and a cold
// start serves every balance a client was told.
func TestFinalSaveFailureKeepsServing(t *testing.T) {
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(f.dir(t, dir), "state")
			p := startIn(t, dir, modeFull, "-state", state)
			c := pdftest.Dial(t, p.addr)
			c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")

			f.cause(t, state)
			mark := p.logs.len()
			syscall.Kill(p.pid, syscall.SIGTERM)
			checkErr(t, p.logs.await(t, mark, "handoff: Run: state not saved; still serving", p.pid), state)
			c.Ask(t, "TOPUP 2 alice 5", "OK 2 105")
			pdftest.Dial(t, p.addr).Ask(t, "BALANCE 3 alice", "BAL 3 105")
			// No upgrade either: it would have to save or hand over a
			// ledger that this process is stopping with.
			syscall.Kill(p.pid, syscall.SIGHUP)
			p.logs.await(t, mark, "handoff: Run: upgrade refused: the state is not saved", p.pid)

			f.fix(t, state)
			p.stop(t, p.pid)
			if code := p.exitCode(t); code != 0 {
				t.Fatalf("exit code %d after the second SIGTERM, want 0", code)
			}
			q := startIn(t, dir, modeFull, "-state", state)
			pdftest.Dial(t, q.addr).Ask(t, "BALANCE 1 alice", "BAL 1 105")
		})
	}
}

// TestStaleStateRefused: after a server that did not save at its end (here
// killed), the state file on disk is older than what clients were told; a
// cold start says so and serves it only when told to.
func TestStaleStateRefused(t *testing.T) {
	p := startPDF(t, modeFull)
	pdftest.Dial(t, p.addr).Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	p.stop(t, p.pid)

	q := startIn(t, p.dir, modeFull)
	pdftest.Dial(t, q.addr).Ask(t, "TOPUP 1 alice 50", "OK 1 150")
	syscall.Kill(q.pid, syscall.SIGKILL)
	q.exitCode(t)

	line := refused(t, launch(t, p.dir))
	checkErr(t, line, p.state)
	for _, want := range []string{p.state + markerSuffix, "pid " + strconv.Itoa(q.pid), "-state-accept-stale"} {
		if !strings.Contains(field(line, "err"), want) {
			t.Fatalf("err %q does not say %q", field(line, "err"), want)
		}
	}

	r := startIn(t, p.dir, modeFull, "-state-accept-stale")
	stale := r.logs.await(t, 0, "serving a stale state file", r.pid)
	if !strings.Contains(stale, "level=ERROR") || field(stale, "path") != p.state ||
		field(stale, "marker") != p.state+markerSuffix || field(stale, "written") == "" {
		t.Fatalf("stale line %q: want ERROR with path, marker and written", stale)
	}
	pdftest.Dial(t, r.addr).Ask(t, "BALANCE 1 alice", "BAL 1 100")
	r.stop(t, r.pid)

	// Saved at its end: the next start is an ordinary one.
	s := startIn(t, p.dir, modeFull)
	pdftest.Dial(t, s.addr).Ask(t, "BALANCE 1 alice", "BAL 1 100")
	if strings.Contains(s.logs.String(), "stale") {
		t.Fatalf("a start after a clean stop speaks of staleness:\n%s", s.logs)
	}
}

// TestLostStateRefused: a server that never saved and was killed leaves
// no state file but a marker: starting empty would lose what it took.
func TestLostStateRefused(t *testing.T) {
	p := startPDF(t, modeFull)
	pdftest.Dial(t, p.addr).Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	syscall.Kill(p.pid, syscall.SIGKILL)
	p.exitCode(t)

	line := refused(t, launch(t, p.dir))
	if err := field(line, "err"); !strings.Contains(err, "-state-accept-stale") || !strings.Contains(err, p.state+markerSuffix) {
		t.Fatalf("err %q: want the marker and -state-accept-stale named", err)
	}
	q := startIn(t, p.dir, modeFull, "-state-accept-stale")
	q.logs.await(t, 0, "serving a stale state file", q.pid)
	pdftest.Dial(t, q.addr).Ask(t, "BALANCE 1 alice", "BAL 1 0")
}

// TestMarkerAcrossUpgrades: in every mode, the process serving after an
// upgrade owns the marker, the old one leaves it alone, and the final save
// of the new one removes it. The first process runs with -state-reset, as
// a unit file may have kept it: only a cold start acts on it, not the
// start of an upgrade's new process or image.
func TestMarkerAcrossUpgrades(t *testing.T) {
	for _, mode := range []string{modeFull, modeListeners, modeRestart} {
		t.Run(mode, func(t *testing.T) {
			p := startPDF(t, mode, "-drain-timeout", "10ms", "-state-reset")
			p.logs.await(t, 0, "starting with an empty ledger", p.pid)
			if m := mustMarker(t, p.state); m.pid != p.pid {
				t.Fatalf("marker names pid %d, want %d", m.pid, p.pid)
			}
			pdftest.Dial(t, p.addr).Ask(t, "TOPUP 1 alice 100", "OK 1 100")

			mark := p.logs.len()
			syscall.Kill(p.pid, syscall.SIGHUP)
			p.logs.await(t, mark, "upgrade complete", 0)
			serving := p.logs.await(t, mark, "serving", 0)
			pid, _ := strconv.Atoi(field(serving, "pid"))
			if mode != modeRestart {
				if code := p.exitCode(t); code != 0 {
					t.Fatalf("old process exit code %d", code)
				}
			}
			if m := mustMarker(t, p.state); m.pid != pid {
				t.Fatalf("marker names pid %d, want the serving one, %d", m.pid, pid)
			}
			pdftest.Dial(t, p.addr).Ask(t, "BALANCE 1 alice", "BAL 1 100")

			p.stop(t, pid)
			p.logs.await(t, mark, "state saved", pid)
			if _, err := os.Stat(p.state + markerSuffix); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("marker left after the final save: %v", err)
			}
			q := startIn(t, p.dir, mode)
			pdftest.Dial(t, q.addr).Ask(t, "BALANCE 1 alice", "BAL 1 100")
		})
	}
}

func mustMarker(t *testing.T, state string) marker {
	t.Helper()
	m, err := readMarker(state + markerSuffix)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCorruptStateRefused: a corrupt state file is moved aside, and no
// start serves an empty ledger in its place until told to.
func TestCorruptStateRefused(t *testing.T) {
	p := startPDF(t, modeFull)
	pdftest.Dial(t, p.addr).Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	p.stop(t, p.pid)
	file, err := os.ReadFile(p.state)
	if err != nil {
		t.Fatal(err)
	}
	file[len(file)/2] ^= 0x01
	os.WriteFile(p.state, file, 0o600)

	line := refused(t, launch(t, p.dir))
	checkErr(t, line, p.state)
	aside, _ := filepath.Glob(p.state + ".corrupt-*")
	if len(aside) != 1 || !strings.Contains(field(line, "err"), aside[0]) ||
		!strings.Contains(field(line, "err"), "-state-reset") {
		t.Fatalf("err %q: want the file moved aside (%v) and -state-reset named", field(line, "err"), aside)
	}
	// The file is gone from its place; the next start refuses all the same.
	line = refused(t, launch(t, p.dir))
	if !strings.Contains(field(line, "err"), aside[0]) || !strings.Contains(field(line, "err"), "-state-reset") {
		t.Fatalf("second start: err %q: want %s and -state-reset named", field(line, "err"), aside[0])
	}

	q := startIn(t, p.dir, modeFull, "-state-reset")
	if warn := q.logs.await(t, 0, "starting with an empty ledger", q.pid); !strings.Contains(warn, "level=WARN") {
		t.Fatalf("reset line %q, want WARN", warn)
	}
	pdftest.Dial(t, q.addr).Ask(t, "BALANCE 1 alice", "BAL 1 0")
	pdftest.Dial(t, q.addr).Ask(t, "TOPUP 2 bob 7", "OK 2 7")
	q.stop(t, q.pid)
	r := startIn(t, p.dir, modeFull)
	pdftest.Dial(t, r.addr).Ask(t, "BALANCE 1 bob", "BAL 1 7")
}

// TestUsage: -h says what the program is and what its signals do; a stray
// argument is a usage error.
func TestUsage(t *testing.T) {
	p := launch(t, t.TempDir(), "-h")
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("-h: exit code %d, want 0", code)
	}
	p.logs.awaitEOF(t)
	usage := p.logs.String()
	for _, want := range []string{"charging server", "TOPUP", "README", "SIGHUP", "SIGTERM", "SIGINT",
		"successor", "-state-reset", "-state-accept-stale", "-upgrade-mode", "exit"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage does not mention %q:\n%s", want, usage)
		}
	}

	p = launch(t, t.TempDir(), "stray")
	if code := p.exitCode(t); code != 2 {
		t.Fatalf("a stray argument: exit code %d, want 2", code)
	}
	if line := p.logs.await(t, 0, "refusing to start", p.pid); !strings.Contains(field(line, "err"), `"stray"`) {
		t.Fatalf("no word of the stray argument: %s", line)
	}
}

// TestRestartSaveFailureCarriesOn: a restart saves before it closes
// anything, so one that cannot save leaves the process serving.
func TestRestartSaveFailureCarriesOn(t *testing.T) {
	p := startPDF(t, modeRestart)
	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	if err := os.Mkdir(p.state, 0o700); err != nil { // in the way of the rename
		t.Fatal(err)
	}
	mark := p.logs.len()
	syscall.Kill(p.pid, syscall.SIGHUP)
	checkErr(t, p.logs.await(t, mark, "upgrade failed; this process carries on", p.pid), p.state)
	c.Ask(t, "TOPUP 2 alice 5", "OK 2 105")

	os.Remove(p.state)
	mark = p.logs.len()
	syscall.Kill(p.pid, syscall.SIGHUP)
	p.logs.await(t, mark, "upgrade complete", p.pid)
	pdftest.Dial(t, p.addr).Ask(t, "BALANCE 1 alice", "BAL 1 105")
}

// tmpfsDisk mounts a fresh tmpfs in dir, for a state file on a disk of
// its own that a test can fill or remount read-only.
func tmpfsDisk(t *testing.T, dir string) string {
	disk := filepath.Join(dir, "disk")
	os.Mkdir(disk, 0o700)
	mountTmpfs(t, disk, 0)
	return disk
}
