// Package plain is what the examples' -plain mode shares: the same
// server without the handoff library, the baseline make bench-steady
// measures the library's cost against. It writes the pid file and turns
// the signals into a stop, as the library would, and nothing else.
package plain

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
)

// WritePID replaces path with this process's pid, by rename, so that a
// reader never sees half of it. Nothing if path is empty.
func WritePID(path string) error {
	if path == "" {
		return nil
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// OnStop calls stop, on a goroutine of its own, at the first SIGTERM or
// SIGINT, and ignores SIGHUP from now on: there is no upgrade without
// the library.
func OnStop(stop func()) {
	signal.Ignore(syscall.SIGHUP)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		stop()
	}()
}
