//go:build !linux

package handoff

import "syscall"

func (u *core) passStop(sig syscall.Signal) {}

func (u *core) passPendingStops() {}
