package app

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/statefile"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestOpenCold(t *testing.T) {
	dir := t.TempDir()
	st := stateFile{path: filepath.Join(dir, "state")}

	// No file: start empty.
	srv := server.New("v2.0.0", ledger.NewV2(), quiet())
	if err := st.openCold(srv, coldStart{}, quiet()); err != nil {
		t.Fatalf("missing file: %v", err)
	}

	// A v1 file loads into v2.
	v1 := ledger.NewV1()
	v1.TopUp("alice", 42)
	if err := ledger.States.WriteFile(st.path, v1, 3); err != nil {
		t.Fatal(err)
	}
	if err := st.openCold(srv, coldStart{}, quiet()); err != nil {
		t.Fatalf("good file: %v", err)
	}
	var snap bytes.Buffer
	srv.SaveState(&snap)
	v2, h, err := ledger.States.Load(&snap, ledger.Schema2)
	if err != nil || v2.(*ledger.V2).Balance("alice") != 42 || h.Generation != 4 {
		t.Fatalf("restored %+v, generation %d, %v; want alice 42, generation 4", v2, h.Generation, err)
	}

	// A corrupt file is moved aside, and the start refuses.
	file, _ := os.ReadFile(st.path)
	file[len(file)/2] ^= 1
	os.WriteFile(st.path, file, 0o600)
	empty := server.New("v1.0.0", ledger.NewV1(), quiet())
	if err := st.openCold(empty, coldStart{}, quiet()); !errors.Is(err, statefile.ErrCorrupt) {
		t.Fatalf("corrupt file: %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat(st.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt file still in place: %v", err)
	}
	if aside, _ := filepath.Glob(st.path + ".corrupt-*"); len(aside) != 1 {
		t.Fatalf("corrupt file not moved aside: %v", aside)
	}
}

// A whole file the server cannot use is not corrupt: starting empty would
// lose it at the next snapshot, so the start stops and the file stays.
func TestOpenColdRefusesForeignState(t *testing.T) {
	st := stateFile{path: filepath.Join(t.TempDir(), "state")}
	other := statefile.NewSet("not-pdf", nil)
	statefile.Register(other, 1,
		func(*statefile.Out, int) error { return nil },
		func(*statefile.In) (int, error) { return 0, nil })
	if err := other.WriteFile(st.path, 0, 0); err != nil {
		t.Fatal(err)
	}
	srv := server.New("v1.0.0", ledger.NewV1(), quiet())
	if err := st.openCold(srv, coldStart{}, quiet()); !errors.Is(err, statefile.ErrWrongApp) {
		t.Fatalf("err = %v, want ErrWrongApp", err)
	}
	if _, err := os.Stat(st.path); err != nil {
		t.Fatalf("file moved: %v", err)
	}
}

func TestOpenColdUnreadable(t *testing.T) {
	// A directory where the file should be cannot be read; that is not
	// corruption, and moving it aside would hide the mistake.
	st := stateFile{path: t.TempDir()}
	srv := server.New("v1.0.0", ledger.NewV1(), quiet())
	if err := st.openCold(srv, coldStart{}, quiet()); err == nil {
		t.Fatal("restore from a directory succeeded")
	}
	if _, err := os.Stat(st.path); err != nil {
		t.Fatalf("directory moved: %v", err)
	}
}

func TestFlags(t *testing.T) {
	c, err := parseFlags([]string{"-listen", ":1", "-pidfile", "p", "-state", "s", "-upgrade-timeout", "3s"})
	if err != nil || c.listen != ":1" || c.pidfile != "p" || c.state != "s" || c.upgradeTimeout.String() != "3s" {
		t.Fatalf("parseFlags = %+v, %v", c, err)
	}
	if c, _ := parseFlags(nil); c.listen != "127.0.0.1:7070" {
		t.Fatalf("default listen %q", c.listen)
	}
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"-state", "s", "-state-reset"}, true},
		{[]string{"-state", "s", "-state-accept-stale"}, true},
		{[]string{"-state-reset"}, false},
		{[]string{"-state-accept-stale"}, false},
		{[]string{"-state", "s", "-state-reset", "-state-accept-stale"}, false},
		{[]string{"-state", "s", "stray"}, false},
		{[]string{"-state", "s", "--", "-listen"}, false},
	} {
		c, err := parseFlags(tt.args)
		if err != nil {
			t.Fatalf("parseFlags(%q): %v", tt.args, err)
		}
		if err := c.check(); (err == nil) != tt.ok {
			t.Errorf("check(%q) = %v, want ok %v", tt.args, err, tt.ok)
		}
	}
}
