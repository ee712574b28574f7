package handoff

import (
	"context"
	"fmt"
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
	select {
	case <-u.reg.emptied():
		return nil
	case <-ctx.Done():
		if left := len(u.Conns()); left > 0 {
			return fmt.Errorf("handoff: drain: %d connections still open: %w", left, ctx.Err())
		}
		return nil
	}
}
