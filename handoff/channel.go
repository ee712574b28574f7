//go:build linux

package handoff

import "github.com/handoff-dev/handoff/handoff/internal/wire"

// channel is the sessions' name for the handoff channel (package wire).
type channel = wire.Channel

// closeFds closes fds this process will not pass on or keep.
func closeFds(fds []int) { wire.CloseFds(fds) }
