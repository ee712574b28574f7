// Package testtool finds the client programs that tests drive (curl,
// openssl, python3, h2load): the real TLS and HTTP stacks, not only Go's.
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// EnvRequire, set (CI sets it), makes a missing tool fail the test rather
// than skip it. .ci/run installs the tools.
const EnvRequire = "HANDOFF_REQUIRE_TOOLS"

// Need returns the path of the program name, skipping the test if it is
// missing and EnvRequire is unset; install says how to get it.
func Need(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv(EnvRequire) != "" {
		t.Fatalf("%s is required (%s is set): %v", name, EnvRequire, err)
	}
	t.Skipf("%s not installed (%s)", name, install)
	return ""
}
