package loadcheck

import (
	"context"
	"time"
)

// runPersistent is the life of one persistent connection: HELLO, paced
// random traffic until ctx ends, then the final check.
func (c *conn) runPersistent(ctx context.Context, first time.Time, every time.Duration) {
	defer c.close()
	// HELLO ignores ctx: a slot is free at the start, and without it the
	// final check could not expect this connection's gateway name.
	if !c.send(nil, nil, c.m.hello) {
		return
	}
	c.pace(ctx, first, every)
	c.finish()
}

// pace sends on a fixed schedule, not when replies come back, so a slow
// server meets the offered load instead of lowering it. A request that
// waited for a pipeline slot is followed at once by the ones due since.
func (c *conn) pace(ctx context.Context, next time.Time, every time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for ctx.Err() == nil {
		if every > 0 {
			t.Reset(time.Until(next))
			select {
			case <-ctx.Done():
				return
			case <-c.dead:
				return
			case <-t.C:
			}
			next = next.Add(every)
		}
		if !c.send(ctx.Done(), nil, c.randomRequest) {
			return
		}
	}
}

func (c *conn) randomRequest() pending {
	k := c.rng.IntN(len(c.m.accts))
	switch r := c.rng.IntN(100); {
	case r < 25:
		return c.m.topup(k, 1+c.rng.Int64N(100))
	case r < 60:
		// Charges up to 1.5x the mean top-up, so DENY happens too.
		return c.m.charge(k, 1+c.rng.Int64N(150))
	case r < 75:
		return c.m.balance(k)
	case r < 85:
		return c.m.whoami()
	case r < 92 || !c.sawV2.Load():
		return c.m.version()
	default:
		return c.m.stats(k)
	}
}

// finish waits for every reply, then asks for every owned balance and the
// request counter: the proof that the server kept this connection's state
// across whatever happened during the run.
func (c *conn) finish() {
	if !c.drain() {
		return
	}
	before := c.errs.Load()
	if c.finalCheck() && c.drain() && c.errs.Load() == before {
		c.st.finalOK.Add(1)
		return
	}
	c.st.fail(&c.st.finalFailed, "%s: final check failed", c.gw)
}

func (c *conn) finalCheck() bool {
	t := time.NewTimer(c.cfg.DrainTimeout)
	defer t.Stop()
	for k := range c.m.accts {
		if !c.send(nil, t.C, func() pending { return c.m.balance(k) }) {
			return false
		}
	}
	return c.send(nil, t.C, c.m.whoami)
}
