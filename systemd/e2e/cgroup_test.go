//go:build e2esystemd

package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroup is a cgroup of a container's own, one directory in each
// hierarchy systemd tracks processes with (cgroup2, and name=systemd on a
// hybrid host).
//
// systemd-nspawn --keep-unit puts the container under its own cgroup, in
// payload/. Without a host systemd to give each caller a unit, every
// container started from the same cgroup shares that payload/, and the
// systemd of each sees the others' processes in its units: pdf.service of
// one container held the pdf of another, which its systemd read as pid 0
// ("Failed to kill control group ... Input/output error" at a stop) and
// would wait on to call the cgroup empty. So nspawn starts in a fresh
// cgroup of its own.
type cgroup struct {
	dirs []string // created by newCgroup, one per hierarchy
	v2   string   // the cgroup2 one, if any: cgroup.kill ends it at once
}

// newCgroup creates name under this process's cgroup in each hierarchy.
func newCgroup(name string) (*cgroup, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	v2Mount, systemdMount, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	g := &cgroup{}
	for line := range strings.Lines(string(own)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(f) != 3 {
			continue
		}
		var dir string
		switch {
		case f[0] == "0" && f[1] == "" && v2Mount != "":
			dir = filepath.Join(v2Mount, f[2], name)
			g.v2 = dir
		case slices.Contains(strings.Split(f[1], ","), "name=systemd") && systemdMount != "":
			dir = filepath.Join(systemdMount, f[2], name)
		default:
			continue
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			g.remove()
			return nil, fmt.Errorf("cgroup for the container: %w", err)
		}
		g.dirs = append(g.dirs, dir)
	}
	if len(g.dirs) == 0 {
		return nil, errors.New("cgroup for the container: neither a cgroup2 nor a name=systemd hierarchy is mounted")
	}
	return g, nil
}

// cgroupMounts finds where the cgroup2 and the name=systemd hierarchies
// are mounted; "" for one that is not.
func cgroupMounts() (v2, systemd string, err error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	for line := range strings.Lines(string(b)) {
		// id parent dev root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 {
			continue
		}
		switch {
		case g[0] == "cgroup2" && v2 == "":
			v2 = f[4]
		case g[0] == "cgroup" && systemd == "" && slices.Contains(strings.Split(g[2], ","), "name=systemd"):
			systemd = f[4]
		}
	}
	return v2, systemd, nil
}

// wrap returns a command line that moves itself into the cgroup, then
// executes args: so nspawn starts there and puts its container under it.
func (g *cgroup) wrap(args ...string) []string {
	var script strings.Builder
	for _, d := range g.dirs {
		fmt.Fprintf(&script, "echo $$ > %s/cgroup.procs && ", strconv.Quote(d))
	}
	script.WriteString(`exec "$@"`)
	return append([]string{"sh", "-c", script.String(), "sh"}, args...)
}

// kill SIGKILLs every process in the cgroup: with cgroup.kill where the
// kernel has it, else one by one.
func (g *cgroup) kill() {
	if g.v2 != "" && os.WriteFile(filepath.Join(g.v2, "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	for _, d := range g.dirs {
		filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err == nil && e.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(path)
				for _, f := range strings.Fields(string(b)) {
					if pid, _ := strconv.Atoi(f); pid > 0 {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			return nil
		})
	}
}

// remove removes the cgroup and what the container made under it,
// deepest first, waiting a little for processes that are exiting.
func (g *cgroup) remove() error {
	var errs []error
	for _, d := range g.dirs {
		var dirs []string
		filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, dir := range dirs {
			var err error
			for range 50 {
				if err = syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", dir, err))
			}
		}
	}
	return errors.Join(errs...)
}
