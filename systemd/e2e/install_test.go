//go:build e2esystemd

package e2e

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// The release layout in the container: one directory per release under
// /opt/pdf/releases, /opt/pdf/current a symlink to the deployed one, the
// unit starting /opt/pdf/current/pdf.
const (
	current = "/opt/pdf/current"
	// broken is a release whose pdf exits at once: an upgrade to it must
	// roll back.
	broken       = "broken"
	brokenScript = "#!/bin/sh\nexit 3\n"
)

// units are the unit files of systemd/ the tests install, if present.
var units = []string{"pdf.service", "pdf.socket"}

// watchdogDropIn turns systemd's watchdog on for every scenario, short
// enough that a process that stopped pinging after an upgrade (the
// WATCHDOG_PID trap) would be killed and restarted within the settle time
// that follows each reload, which the scenarios' NRestarts checks catch.
const watchdogDropIn = "[Service]\nWatchdogSec=2s\n"

// install prepares, in dir, what the container gets on top of the cached
// root, and returns the nspawn options that mount it: /opt/pdf with the
// releases v1, v2 and broken and v1 deployed (writable, so that a deploy
// in the container switches the symlink), handoffctl, and the units.
func install(t testing.TB, dir string) (binds []string) {
	t.Helper()
	opt := filepath.Join(dir, "opt-pdf")
	for _, v := range []string{"v1", "v2"} {
		copyFile(t, filepath.Join(env.bin, "pdf-"+v), filepath.Join(opt, "releases", v, "pdf"), 0o755)
	}
	writeFile(t, filepath.Join(opt, "releases", broken, "pdf"), brokenScript, 0o755)
	if err := os.Symlink("releases/v1", filepath.Join(opt, "current")); err != nil {
		t.Fatal(err)
	}
	binds = append(binds, "--bind="+opt+":/opt/pdf",
		"--bind-ro="+filepath.Join(env.bin, "handoffctl")+":/usr/local/bin/handoffctl")
	for _, u := range units {
		src := filepath.Join(env.units, u)
		if _, err := os.Stat(src); err != nil {
			continue // a scenario that needs it says so
		}
		dst := filepath.Join(dir, "units", u)
		copyFile(t, src, dst, 0o644)
		binds = append(binds, "--bind-ro="+dst+":/etc/systemd/system/"+u)
	}
	dropIn := filepath.Join(dir, "units", "e2e-watchdog.conf")
	writeFile(t, dropIn, watchdogDropIn, 0o644)
	return append(binds, "--bind-ro="+dropIn+":/etc/systemd/system/pdf.service.d/e2e-watchdog.conf")
}

// deploy points /opt/pdf/current at release, as an operator would.
func (c *container) deploy(release string) {
	c.t.Helper()
	c.must("ln", "-sfn", "releases/"+release, current)
}

// requireUnit fails unless systemd/ has the unit, which install copied.
func requireUnit(t testing.TB, unit string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(env.units, unit)); err != nil {
		t.Fatalf("this scenario needs systemd/%s: %v", unit, err)
	}
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("install %s: %v", dst, err)
	}
}

func writeFile(t testing.TB, dst, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
