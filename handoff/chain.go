package handoff

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// chain is what travels from process to process besides connections and
// state: where the chain stands, its totals and the application's carried
// values.
type chain struct {
	mu         sync.Mutex
	generation uint64
	start      time.Time
	totals     Totals
	carried    map[string]float64 // from the old process, by name
	carries    map[string]carry   // registered by Carry
}

type carry struct {
	read    func() float64
	restore func(float64)
}

func newChain() *chain {
	return &chain{start: time.Now(), totals: Totals{RolledBack: map[string]uint64{}},
		carried: map[string]float64{}, carries: map[string]carry{}}
}

// snapshot is what the old process sends: its generation, chain start,
// totals and the carried values, read now.
func (c *chain) snapshot() (carried, error) {
	v, carries := c.own()
	for name, cr := range carries {
		// The application's code, in the serving process: a panic fails
		// the upgrade instead of the process.
		err := callSafely(fmt.Sprintf("Carry %q read", name), func() error {
			v.values["app."+name] = cr.read()
			return nil
		})
		if err != nil {
			return carried{}, err
		}
	}
	return v, nil
}

// own is the chain's own part of snapshot, and the application's carries
// to read, without the lock held.
func (c *chain) own() (carried, map[string]carry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := carried{generation: c.generation, start: c.start, values: map[string]float64{
		"handoff.committed":         float64(c.totals.Committed),
		"handoff.conns_handed_over": float64(c.totals.ConnsHandedOver),
	}}
	for cause, n := range c.totals.RolledBack {
		v.values["handoff.rolled_back."+cause] = float64(n)
	}
	carries := make(map[string]carry, len(c.carries))
	for name, cr := range c.carries {
		carries[name] = cr
	}
	return v, carries
}

// adopt makes the new process continue the chain the old one sent, with
// the upgrade that just committed counted, and restores the application's
// values. Called on COMMIT, before any connection is served.
func (c *chain) adopt(v carried, conns int) error {
	c.mu.Lock()
	c.generation = v.generation + 1
	c.start = v.start
	c.totals = Totals{RolledBack: map[string]uint64{}}
	restores := map[string]func(float64){}
	for name, x := range v.values {
		switch {
		case name == "handoff.committed":
			c.totals.Committed = uint64(x) + 1
		case name == "handoff.conns_handed_over":
			c.totals.ConnsHandedOver = uint64(x) + uint64(conns)
		case strings.HasPrefix(name, "handoff.rolled_back."):
			c.totals.RolledBack[strings.TrimPrefix(name, "handoff.rolled_back.")] = uint64(x)
		case strings.HasPrefix(name, "app."):
			app := strings.TrimPrefix(name, "app.")
			c.carried[app] = x
			if cr, ok := c.carries[app]; ok && cr.restore != nil {
				restores[app] = cr.restore
			}
		}
	}
	c.mu.Unlock()
	var errs []error
	for name, restore := range restores {
		// After the commit: a panic must not end the process that now
		// serves every connection. The value is lost, and said so.
		errs = append(errs, callSafely(fmt.Sprintf("Carry %q restore", name), func() error {
			restore(v.values["app."+name])
			return nil
		}))
	}
	return errors.Join(errs...)
}

// count records an upgrade's outcome in this process's totals.
func (c *chain) count(r UpgradeResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Committed {
		c.totals.Committed++
		c.totals.ConnsHandedOver += uint64(r.Stats.Conns)
		return
	}
	if r.Cause != CauseRefused {
		c.totals.RolledBack[r.Cause]++
	}
}

// carried is the CARRY frame's content.
type carried struct {
	generation uint64
	start      time.Time
	values     map[string]float64
}

// callSafely runs an application callback, turning a panic into an error.
func callSafely(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handoff: %s panicked: %v", what, r)
		}
	}()
	if err := f(); err != nil {
		return fmt.Errorf("handoff: %s: %w", what, err)
	}
	return nil
}
