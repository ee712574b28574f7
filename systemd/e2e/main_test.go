//go:build e2esystemd

package e2e

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stamp is the file systemd/e2e/setup writes into a root it finished.
const stamp = ".e2e-root-complete"

// env is what every test shares, prepared once by TestMain.
var env struct {
	repo  string // the repository's root
	root  string // the debootstrapped root each container copies
	bin   string // pdf-v1, pdf-v2, handoffctl and pdfload, linked statically
	units string // the units to install: the repository's systemd/
}

// TestMain checks what the tests need and builds the binaries once. It
// fails, never skips: a test that cannot run must not look like a pass.
func TestMain(m *testing.M) {
	if err := prepare(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(env.bin)
	os.Exit(code)
}

func prepare() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: systemd-nspawn and nsenter need it (CI runs as root)")
	}
	for _, tool := range []string{"systemd-nspawn", "nsenter", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (systemd/e2e/setup installs systemd-nspawn): %w", tool, err)
		}
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(repo, "go.mod")); err != nil ||
		!strings.HasPrefix(string(b), "module github.com/handoff-dev/handoff\n") {
		return fmt.Errorf("%s is not the handoff repository (run from systemd/e2e, as go test does)", repo)
	}
	env.repo = repo
	env.units = filepath.Join(repo, "systemd")
	env.root = os.Getenv("E2E_ROOT")
	if env.root == "" {
		env.root = filepath.Join(repo, ".cache", "e2e-root")
	}
	if _, err := os.Stat(filepath.Join(env.root, stamp)); err != nil {
		return fmt.Errorf("no complete Debian root at %s (%w): run systemd/e2e/setup first (make e2e-systemd does)", env.root, err)
	}
	if env.bin, err = os.MkdirTemp("", "pdf-e2e-bin-"); err != nil {
		return err
	}
	return buildAll()
}

// binaries are the programs the tests install in the container (all but
// pdfload) or run on the host (pdfload), by package directory (each is
// built in its directory: examples/ is a module of its own).
var binaries = map[string]string{
	"pdf-v1":     "./examples/pdf/cmd/pdf-v1",
	"pdf-v2":     "./examples/pdf/cmd/pdf-v2",
	"handoffctl": "./cmd/handoffctl",
	"pdfload":    "./examples/pdf/cmd/pdfload",
}

// buildAll builds every binary with cgo off: make build links them to the
// host's libc, which the container's Debian need not have.
func buildAll() error {
	for name, pkg := range binaries {
		out := filepath.Join(env.bin, name)
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = filepath.Join(env.repo, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
		if err := checkStatic(out); err != nil {
			return err
		}
	}
	return nil
}

// checkStatic fails if the executable at path asks for a dynamic loader.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked, though built with CGO_ENABLED=0", path)
		}
	}
	return nil
}
