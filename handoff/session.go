//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// What both sides of an upgrade (parent.go, child.go) share.

// withCause puts ctx's cause (a stop, a timeout, the new process's exit)
// in front of err, the symptom it caused on the channel. A deadline that
// has passed is the context's even if the channel noticed first. A
// refusal the peer sent (ABORT) is no symptom: it came first, and what
// the context saw after it (typically the refusing process's exit, a few
// microseconds later) follows from it.
func withCause(ctx context.Context, err error) error {
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		<-ctx.Done()
	}
	cause := context.Cause(ctx)
	switch {
	case err == nil || cause == nil || errors.Is(err, cause):
		return err // nil: what succeeded did, the caller checks ctx next
	case errors.Is(err, ErrRejected):
		return fmt.Errorf("%w (then %v)", err, cause)
	}
	return fmt.Errorf("%w (%v)", cause, err)
}
