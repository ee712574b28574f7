package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
	"github.com/handoff-dev/handoff/statefile"
)

var testHeader = statefile.Header{
	App:        "ledger",
	Schema:     3,
	Generation: 42,
	Created:    time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
}

// journalLen is more than three of the Writer's 64 KiB chunks, so that
// the section's length is counted over several Reads and chunks.
const journalLen = 200_000

// writeStateFile writes a good state file of three sections, the second
// one empty, into a fresh directory and returns its path and bytes.
func writeStateFile(t *testing.T) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w, err := statefile.NewWriter(&buf, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	journal := make([]byte, journalLen)
	for i := range journal {
		journal[i] = byte(i % 251) // no run of equal chunks
	}
	for _, s := range []struct {
		name string
		data []byte
	}{
		{"meta", []byte("hello state")},
		{"empty", nil},
		{"journal", journal},
	} {
		if err := w.Section(s.name); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(s.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "state.bin", buf.Bytes()), buf.Bytes()
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestInspect(t *testing.T) {
	path, data := writeStateFile(t)
	var out bytes.Buffer
	if err := inspect(&out, path); err != nil {
		t.Fatalf("inspect: %v\noutput:\n%s", err, &out)
	}
	want := fmt.Sprintf(`app:        "ledger"
schema:     3
generation: 42
created:    2025-03-01T12:00:00Z
format:     1
size:       %d bytes
section 0: "meta", 11 bytes
section 1: "empty", 0 bytes
section 2: "journal", %d bytes
checksum: ok
`, len(data), journalLen)
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestInspectDamaged(t *testing.T) {
	_, good := writeStateFile(t)
	flip := func(i int) func([]byte) []byte {
		return func(b []byte) []byte {
			b = bytes.Clone(b)
			b[i] ^= 0x01
			return b
		}
	}
	// The first byte of the application name: inside the header.
	appByte := len(statefile.Magic) + 2 + 2 + 1
	// The middle of the file is in the journal's second chunk, after its
	// first 64 KiB.
	middle := len(good) / 2
	headerLines := []string{`app:        "ledger"`, "generation: 42"}
	for _, tc := range []struct {
		name    string
		damage  func([]byte) []byte
		wantErr error
		// wantOut is what must still be printed: how far the file was good.
		wantOut []string
	}{
		{
			name:    "flipped header byte",
			damage:  flip(appByte),
			wantErr: statefile.ErrChecksum,
		},
		{
			name:    "flipped byte in the last section",
			damage:  flip(middle),
			wantErr: statefile.ErrChecksum,
			wantOut: append(headerLines, `section 0: "meta", 11 bytes`, `section 1: "empty", 0 bytes`,
				`section 2: "journal", unreadable after 65536 bytes`),
		},
		{
			name:    "flipped byte in the file checksum",
			damage:  flip(len(good) - 1),
			wantErr: statefile.ErrChecksum,
			wantOut: append(headerLines, `section 2: "journal", 200000 bytes`),
		},
		{
			name:    "truncated in the last section",
			damage:  func(b []byte) []byte { return b[:middle] },
			wantErr: statefile.ErrTruncated,
			wantOut: append(headerLines, `section 1: "empty", 0 bytes`,
				`section 2: "journal", unreadable after 65536 bytes`),
		},
		{
			name:    "truncated before the end record",
			damage:  func(b []byte) []byte { return b[:len(b)-17] },
			wantErr: statefile.ErrTruncated,
			wantOut: append(headerLines, `section 2: "journal", 200000 bytes`),
		},
		{
			name:    "empty file",
			damage:  func([]byte) []byte { return nil },
			wantErr: statefile.ErrTruncated,
		},
		{
			name:    "not a state file",
			damage:  func([]byte) []byte { return []byte("#!/bin/sh\necho this is a shell script\n") },
			wantErr: statefile.ErrCorrupt,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "state.bin", tc.damage(good))
			var out bytes.Buffer
			err := inspect(&out, path)
			if !errors.Is(err, statefile.ErrCorrupt) || !errors.Is(err, tc.wantErr) {
				t.Fatalf("inspect: %v, want an error wrapping %v and %v", err, statefile.ErrCorrupt, tc.wantErr)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
			for _, line := range tc.wantOut {
				if !strings.Contains(out.String(), line+"\n") {
					t.Errorf("output lacks %q:\n%s", line, &out)
				}
			}
			if strings.Contains(out.String(), "checksum: ok") {
				t.Errorf("output of a damaged file says the checksum is ok:\n%s", &out)
			}
		})
	}
}

func TestInspectMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.bin")
	err := inspect(new(bytes.Buffer), path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("inspect: %v, want a not-exist error naming %s", err, path)
	}
}

// TestCommand builds handoffctl and runs it as an operator would, for the
// exit statuses and for what goes to which stream.
func TestCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	bin := filepath.Join(t.TempDir(), "handoffctl")
	if err := proc.Build("github.com/handoff-dev/handoff/cmd/handoffctl", bin); err != nil {
		t.Fatal(err)
	}

	good, data := writeStateFile(t)
	damaged := bytes.Clone(data)
	damaged[len(damaged)/2] ^= 0x01
	bad := writeFile(t, "bad.bin", damaged)

	for _, tc := range []struct {
		name       string
		args       []string
		wantStatus int
		wantStdout string
		wantStderr string // "": stderr must be empty
	}{
		{"good file", []string{"inspect", good}, 0, "checksum: ok\n", ""},
		{"damaged file", []string{"inspect", bad}, 1, `section 1: "empty", 0 bytes`,
			"handoffctl: " + bad + ": statefile: corrupt: checksum mismatch: "},
		{"no arguments", nil, 2, "", "handoffctl: no command: want inspect, status, upgrade, probe or wait\nRun 'handoffctl -h' for usage.\n"},
		{"unknown command", []string{"frobnicate"}, 2, "", `handoffctl: unknown command "frobnicate"`},
		{"no file", []string{"inspect"}, 2, "", "handoffctl: inspect takes one file, not 0 arguments\nRun 'handoffctl -h'"},
		{"two files", []string{"inspect", good, good}, 2, "", "handoffctl: inspect takes one file, not 2 arguments\nRun 'handoffctl -h'"},
		{"help", []string{"-h"}, 0, "", "usage: handoffctl"},
		{"inspect help", []string{"inspect", "-h"}, 0, "", "usage: handoffctl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			status := 0
			if err := cmd.Run(); err != nil {
				var exit *exec.ExitError
				if !errors.As(err, &exit) {
					t.Fatal(err)
				}
				status = exit.ExitCode()
			}
			if status != tc.wantStatus {
				t.Errorf("exit status %d, want %d\nstderr:\n%s", status, tc.wantStatus, &stderr)
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.wantStdout, &stdout)
			}
			switch {
			case tc.wantStderr == "" && stderr.Len() > 0:
				t.Errorf("stderr, want none:\n%s", &stderr)
			case !strings.Contains(stderr.String(), tc.wantStderr):
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, &stderr)
			}
		})
	}
}
