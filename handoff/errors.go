package handoff

import (
	"errors"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// The errors an upgrade ends with, and the causes they are counted under.

// Sentinel errors, each a decision a caller can make (and, in machine.go,
// the refusals of an upgrade).
var (
	// ErrNotChild: the handoff peer is not this process's parent.
	ErrNotChild = errors.New("handoff: peer is not the expected process")
	// ErrRejected: the other process refused the handoff and said why.
	ErrRejected = wire.ErrRejected
	// ErrNotSupported: upgrades need Linux. Everything else works.
	ErrNotSupported = errors.New("handoff: upgrades are not supported on this platform")
)

// The refusals of an upgrade (Upgrade, UpgradeWith) in a phase that
// does not allow one; ErrHandedOver is the fourth.
var (
	// ErrUpgradeInProgress: an upgrade was triggered while another runs.
	ErrUpgradeInProgress = errors.New("handoff: an upgrade is already in progress")
	// ErrNotReady: an upgrade was triggered before Ready returned.
	ErrNotReady = errors.New("handoff: this process is not ready yet")
	// ErrStopped: the process is stopping; no more upgrades start.
	ErrStopped = errors.New("handoff: stopped")
)

// errStopping is the cause of an attempt cancelled by Stop.
var errStopping = errors.New("handoff: the process is stopping")

// Markers wrapped by the errors of an upgrade, for causeOf.
var (
	errTimeout      = errors.New("timed out")
	errPauseTimeout = errors.New("connections paused for too long")
	errParkTimeout  = errors.New("connections did not park within the park timeout")
	errChannelEnded = errors.New("the new process's channel ended")
	errStart        = errors.New("could not start the new process")
	errExited       = errors.New("the new process exited")
	errOtherApp     = errors.New("the new binary is another application")
	errNotNow       = errors.New("the application refused the upgrade for now")
)
