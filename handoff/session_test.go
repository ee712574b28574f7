//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestRefusalBeatsExit: a new process that refuses (ABORT: its LoadState
// failed) exits microseconds later. When the old process reads the ABORT
// and only then sees the exit end its upgrade's context, the rollback's
// cause is the refusal, not the exit that followed it. Before the fix the
// exit came first: cause "exited" (TestLogsTellTheUpgrade failed 1 in 3
// runs of the package under two busy loops).
func TestRefusalBeatsExit(t *testing.T) {
	exited := fmt.Errorf("%w: pid 7, exit status 1", errExited)
	refusal := fmt.Errorf("handoff: waiting for READY: %w: handoff: load state: no", ErrRejected)
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(exited)
	err := withCause(ctx, refusal)
	if got := causeOf(err); got != CauseRejected {
		t.Errorf("cause %q of %q, want %q", got, err, CauseRejected)
	}
	if !strings.Contains(err.Error(), "load state: no") || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("%q: want both the refusal and the exit", err)
	}
	// Any other symptom on the channel is the exit's doing.
	err = withCause(ctx, errors.New("read: connection reset by peer"))
	if got := causeOf(err); got != CauseExited {
		t.Errorf("cause %q of %q, want %q", got, err, CauseExited)
	}
}

// TestNoCauseWithoutError: a step that succeeded stays a success when its
// context ends afterwards (it read "<cause> (<nil>)" before); the commit
// checks the context itself.
func TestNoCauseWithoutError(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errStopping)
	if err := withCause(ctx, nil); err != nil {
		t.Errorf("withCause(ended ctx, nil) = %q, want nil", err)
	}
}
