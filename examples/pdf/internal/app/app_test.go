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
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestWriteFileReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	for _, want := range []string{"first", "second"} {
		err := writeFile(path, func(w io.Writer) error {
			_, err := io.WriteString(w, want)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != want {
			t.Fatalf("file = %q, want %q", got, want)
		}
	}
}

func TestWriteFileFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	os.WriteFile(path, []byte("old"), 0o600)
	boom := errors.New("boom")
	err := writeFile(path, func(w io.Writer) error {
		io.WriteString(w, "half")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Fatalf("file = %q after a failed save", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temp file left behind: %v", ents)
	}
}

func TestRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")

	// No file: start empty.
	srv := server.New("v2.0.0", ledger.NewV2(), quiet())
	if err := restore(path, srv, quiet()); err != nil {
		t.Fatalf("missing file: %v", err)
	}

	// A v1 file loads into v2.
	v1 := ledger.NewV1()
	v1.TopUp("alice", 42)
	if err := writeFile(path, v1.Save); err != nil {
		t.Fatal(err)
	}
	if err := restore(path, srv, quiet()); err != nil {
		t.Fatalf("good file: %v", err)
	}
	var snap bytes.Buffer
	srv.SaveState(&snap)
	v2 := ledger.NewV2()
	v2.Load(&snap)
	if v2.Balance("alice") != 42 {
		t.Fatalf("restored balance %d, want 42", v2.Balance("alice"))
	}

	// A corrupt file is moved aside and the start goes on.
	os.WriteFile(path, []byte("PDFS\x00\x01garbage"), 0o600)
	if err := restore(path, server.New("v1.0.0", ledger.NewV1(), quiet()), quiet()); err != nil {
		t.Fatalf("corrupt file: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt file still in place: %v", err)
	}
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("corrupt file not moved aside: %v", aside)
	}
}

func TestRestoreUnreadable(t *testing.T) {
	// A directory where the file should be cannot be read; that is not
	// corruption, and moving it aside would hide the mistake.
	path := t.TempDir()
	srv := server.New("v1.0.0", ledger.NewV1(), quiet())
	if err := restore(path, srv, quiet()); err == nil {
		t.Fatal("restore from a directory succeeded")
	}
	if _, err := os.Stat(path); err != nil {
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
