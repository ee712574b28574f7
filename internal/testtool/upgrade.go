package testtool

import (
	"context"
	"errors"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

// Upgrade runs up.Upgrade for a test server's trigger (SIGHUP, a request).
// A test triggers an upgrade once the previous one ended as the old
// process sees it (its exit); in Rolling mode this process may still be
// receiving that move's last connections then, a phase in which an
// upgrade is refused with ErrUpgradeInProgress by design (handoff's
// machine.go). Upgrade waits for that phase to end, asking again, for up
// to a minute; any other refusal or failure is returned at once.
func Upgrade(up *handoff.Upgrader) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := up.Upgrade(context.Background())
		if !errors.Is(err, handoff.ErrUpgradeInProgress) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
