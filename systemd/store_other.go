//go:build !linux

package systemd

import (
	"os"
	"syscall"
	"time"
)

type notifier struct{}

func (s *Supervisor) storeOp(rc syscall.RawConn, kind string, listening, add bool) error {
	return ErrNotSupported
}

func (s *Supervisor) barrier(timeout time.Duration) error { return ErrNotSupported }

// isListening: socket activation passes nothing outside Linux.
func isListening(f *os.File) (bool, error) { return false, ErrNotSupported }

func (s *Supervisor) reclaimMainPID(old int) {}
