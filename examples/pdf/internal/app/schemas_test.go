package app

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
)

// An upgrade sends the ledger in schema 3 to a new process running the
// binary that said it reads it, and in the version's own schema to one
// whose binary does not answer -state-schemas, as those built before
// schema 3 do not: every balance and charge count arrives either way.
func TestUpgradeSendsSchemaTheNewProcessReads(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "pdf")
	copyFile(t, os.Args[0], bin)
	p := launchBin(t, dir, bin, "-upgrade-mode", modeFull)
	p.logs.await(t, 0, "serving", p.pid)
	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	c.Ask(t, "CHARGE 2 alice 30", "OK 2 70")

	p.setVersion(t, "v2")
	v2 := upgradeSending(t, p, p.pid, ledger.Schema3, ledger.Schema2, false) // v1 has no pre-copy
	c.Ask(t, "STATS 3 alice", "STATS 3 70 1")

	// An old binary: it refuses the flag (exit 2), as the flag package
	// makes every binary built before schema 3 do.
	old := filepath.Join(dir, "pdf.old")
	script := fmt.Sprintf("#!/bin/sh\nfor a; do [ \"$a\" = -state-schemas ] && exit 2; done\nexec %q \"$@\"\n", os.Args[0])
	if err := os.WriteFile(old, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(old, bin); err != nil {
		t.Fatal(err)
	}
	upgradeSending(t, p, v2, ledger.Schema2, ledger.Schema2, true)
	c.Ask(t, "STATS 4 alice", "STATS 4 70 1")
}

// upgradeSending upgrades the process pid by SIGHUP, checks that it sent
// schema sent and that the new process loaded it as schema loaded, and
// returns the new process's pid. precopy: whether the ledger went as a
// pre-copy (from a v2 process in full mode).
func upgradeSending(t *testing.T, p *pdf, pid int, sent, loaded uint32, precopy bool) int {
	t.Helper()
	mark := p.logs.len()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	pre := map[bool]string{true: "true", false: ""}[precopy]
	if line := p.logs.await(t, mark, "sending the ledger", pid); field(line, "schema") != fmt.Sprint(sent) ||
		field(line, "precopy") != pre {
		t.Fatalf("old process: %q, want schema %d, precopy %v", line, sent, precopy)
	}
	line := p.logs.await(t, mark, "state loaded", -pid)
	if field(line, "schema") != fmt.Sprint(sent) || field(line, "migrated_to") != fmt.Sprint(loaded) ||
		field(line, "precopy") != pre {
		t.Fatalf("new process: %q, want schema %d migrated to %d, precopy %v", line, sent, loaded, precopy)
	}
	p.logs.await(t, mark, "upgrade complete", pid)
	next, _ := strconv.Atoi(field(p.logs.await(t, mark, "serving", -pid), "pid"))
	return next
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// The answer to -state-schemas is every schema this binary reads, and
// only a child running the file asked counts as the new process.
func TestAskNext(t *testing.T) {
	dir := t.TempDir()
	for name, script := range map[string]string{
		"old":   "exit 2",          // flag provided but not defined
		"other": "echo chat 1 2 3", // another application
		"junk":  "echo pdf 1 two",
	} {
		bin := filepath.Join(dir, name)
		if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if next, err := askNext(bin); err == nil {
			t.Errorf("%s: %+v, want an error", name, next)
		}
		if v := schemaFor(nil, ledger.Schema1); v != ledger.Schema1 {
			t.Errorf("nothing known: schema %d, want the own schema", v)
		}
	}

	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	sleep, _ = filepath.EvalSymlinks(sleep)
	fi, err := os.Stat(sleep)
	if err != nil {
		t.Fatal(err)
	}
	next := &nextBinary{file: fi, reads: []uint32{1, 2, 3}}
	if v := schemaFor(next, ledger.Schema2); v != ledger.Schema2 {
		t.Fatalf("no child runs %s: schema %d, want 2", sleep, v)
	}
	cmd := exec.Command(sleep, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if v := schemaFor(next, ledger.Schema2); v != ledger.Schema3 {
		t.Fatalf("a child runs %s: schema %d, want 3", sleep, v)
	}
	if v := schemaFor(&nextBinary{file: fi, reads: []uint32{1, 2}}, ledger.Schema2); v != ledger.Schema2 {
		t.Fatalf("a binary that reads 1 and 2: schema %d, want 2", v)
	}
}

// The question runs beside the upgrade: its answer is what the binary
// printed, once it has printed it, and nothing when it failed.
func TestStartAsk(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "pdf")
	script := fmt.Sprintf("#!/bin/sh\nread x < %q\necho pdf 1 2 3\n", gate)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	a := startAsk(bin, func(err error) { t.Errorf("failed: %v", err) })
	select {
	case <-a.done:
		t.Fatal("answered before the binary printed anything")
	default:
	}
	g, err := os.OpenFile(gate, os.O_WRONLY, 0) // blocks until the script reads
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WriteString("go\n"); err != nil {
		t.Fatal(err)
	}
	g.Close()
	if next := a.answer(); next == nil || fmt.Sprint(next.reads) != "[1 2 3]" {
		t.Fatalf("answer %+v, want reads [1 2 3]", next)
	}

	failed := make(chan error, 1)
	if next := startAsk(filepath.Join(dir, "missing"), func(err error) { failed <- err }).answer(); next != nil {
		t.Fatalf("a missing binary answered %+v", next)
	}
	if err := <-failed; err == nil {
		t.Fatal("a missing binary: failed called without an error")
	}
	if (*schemaAsk)(nil).answer() != nil {
		t.Fatal("nothing asked: an answer")
	}
}
