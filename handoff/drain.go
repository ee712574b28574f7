package handoff

import (
	"context"
	"fmt"
	"time"
)

// Drain waits until this process serves no connection any more (Conns is
// empty: every one was closed, or handed over), or until ctx ends. It
// closes nothing and stops nothing: a server calls it once its listeners
// stopped accepting (after Exit is closed with ListenersOnly mode, or
// after Stop) to let its clients finish, then closes what Conns still
// lists.
//
// It returns nil when no connection is left, at once if there was none.
// If ctx ends first, it returns an error that wraps ctx.Err() and says
// how many connections are still open; they are still this process's
// (Conns lists them), and the caller closes them. A connection tracked
// while Drain waits (Wrap, or a Listener still accepting) is waited for
// too.
func (u *Upgrader) Drain(ctx context.Context) error {
	// The registry signals changes on a channel that parkAll and the
	// rolling move consume (one receiver each time), so a second waiter
	// would steal their wake-ups. Until the registry offers a broadcast
	// of "no connection left", Drain looks again after a delay that
	// doubles from 1 ms to drainPollMax: a quick drain returns within
	// milliseconds, a long one costs a few wake-ups a second.
	wait := time.Millisecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		left := len(u.Conns())
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if left = len(u.Conns()); left == 0 {
				return nil
			}
			return fmt.Errorf("handoff: drain: %d connections still open: %w", left, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, drainPollMax)
		t.Reset(wait)
	}
}

// drainPollMax bounds how late Drain notices the last connection close.
const drainPollMax = 50 * time.Millisecond
