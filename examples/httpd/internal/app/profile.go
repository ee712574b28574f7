package app

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// envProfileDir names a directory where the process writes a CPU profile
// of its whole life, cpu-<mode>-<pid>.pprof (mode: plain, or the upgrade
// mode), written at its exit: make
// bench-steady's, to compare where the CPU goes with the library and
// without (-plain). Unset, nothing is profiled.
const envProfileDir = "HTTPD_PROFILE_DIR"

// profile starts the CPU profile envProfileDir asks for and returns what
// ends it; a no-op if none is asked or it cannot start.
func profile(mode string, log *slog.Logger) (stop func()) {
	dir := os.Getenv(envProfileDir)
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%s-%d.pprof", mode, os.Getpid())))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		log.Error("no CPU profile", "err", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
