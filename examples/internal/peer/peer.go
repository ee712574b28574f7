// Package peer is what the example servers share for a takeover by a peer,
// a process they did not start (a new container of the same pod): the
// library's settings from the environment, and what the old process does
// once the peer has committed. kubernetes/README.md says how a pod sets them.
package peer

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

// EnvAfterCommit says what the old process does once an upgrade committed:
// "exit" (the default) or "idle". It is the application's, not the
// library's: only the application knows what it holds besides what the
// library hands over.
const EnvAfterCommit = "HANDOFF_TAKEOVER_AFTER_COMMIT"

// Usage is what the servers' -h says about the environment.
const Usage = `Environment, for a takeover by a peer (a new container of the same pod,
kubernetes/README.md):
  HANDOFF_TAKEOVER_SOCKET, _TOKEN_FILE, _TIMEOUT, _UID
                   the library's (handoff.TakeoverFromEnv)
  HANDOFF_TAKEOVER_AFTER_COMMIT
                   exit (the default): exit 0 after a handover; idle: stay up
                   holding nothing but the control socket, which says
                   handed-over (no served listener, no connection, no file
                   written) until SIGTERM, then exit 0
`

// FromEnv sets opts' takeover fields from the library's variables
// (handoff.TakeoverFromEnv: nothing changes when they are unset) and
// reports whether EnvAfterCommit asks the process to idle after a handover.
func FromEnv(opts *handoff.Options) (idle bool, err error) {
	if err := handoff.TakeoverFromEnv(opts); err != nil {
		return false, err
	}
	switch v := os.Getenv(EnvAfterCommit); v {
	case "", "exit":
		return false, nil
	case "idle":
		return true, nil
	default:
		return false, fmt.Errorf("%s=%q: want exit or idle", EnvAfterCommit, v)
	}
}

// Idle says, as the last step of a process's shutdown after a handover,
// that it now idles (handoff.Service.IdleAfterHandover) until a stop
// signal. A container whose process exits is restarted with its old
// image, or takes its pod out of the Service's endpoints
// (kubernetes/NOTES-facts.md (e)); an idle one holds no served listener
// and no connection, writes no file, keeps only the library's control
// socket (its probes' answer: handed-over), and is the one that takes
// over at the next upgrade, when its image is changed. The pods' tests
// wait for this line (kubernetes/e2e).
func Idle(log *slog.Logger) {
	log.Info("handed over; idle until stopped", EnvAfterCommit, "idle")
}

// PauseTimeout is the library's PauseTimeout for a park timeout: the
// pause holds the park, so a longer park gets a longer pause, with the
// default's time for the rest of the handover.
func PauseTimeout(park time.Duration) time.Duration {
	if park <= handoff.DefaultParkTimeout {
		return 0 // the default
	}
	return park + handoff.DefaultPauseTimeout - handoff.DefaultParkTimeout
}
