package loadcheck

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"time"
)

// Defaults applied to zero fields of a Config.
const (
	DefaultAddr         = "127.0.0.1:7070"
	DefaultConns        = 200
	DefaultPipeline     = 8
	DefaultRate         = 2000
	DefaultChurn        = 50
	DefaultStallTimeout = 10 * time.Second
	DefaultDrainTimeout = 10 * time.Second
	DefaultAccounts     = 4
	DefaultChurnLimit   = 256
)

// Config describes one load run. A zero field means its documented
// default; the numeric knobs that can sensibly be switched off take a
// negative value for "none".
type Config struct {
	// Addr is the server's TCP address. Default DefaultAddr.
	Addr string

	// Conns is the number of persistent pipelining connections.
	// Default DefaultConns; negative means none (churn only).
	Conns int

	// Pipeline is how many requests each persistent connection keeps in
	// flight at most. Default DefaultPipeline.
	Pipeline int

	// Rate is the total requests per second over all persistent
	// connections, sent on a fixed schedule whatever the replies do.
	// Default DefaultRate; negative means unpaced (each connection sends
	// as fast as its pipeline allows), which measures queueing.
	Rate float64

	// Churn is how many short-lived connections to open per second; each
	// says HELLO, sends a few requests, checks the replies and closes.
	// Default DefaultChurn; negative means none.
	Churn float64

	// ChurnLimit caps churn connections open at once, so a server that
	// hangs cannot make the client run out of file descriptors; a churn
	// tick that finds the cap reached is skipped and counted.
	// Default DefaultChurnLimit.
	ChurnLimit int

	// Duration ends the run after this long. Zero means run until ctx is
	// done.
	Duration time.Duration

	// StallTimeout is how long a connection may wait for a reply (or for a
	// write to go out) before it is declared stalled.
	// Default DefaultStallTimeout.
	StallTimeout time.Duration

	// DrainTimeout bounds the wait for outstanding replies at the end of
	// the run, and again for the final check. Default DefaultDrainTimeout.
	DrainTimeout time.Duration

	// Accounts is the number of accounts each persistent connection owns.
	// Default DefaultAccounts.
	Accounts int

	// Seed makes the request mix reproducible; zero picks a random seed.
	// Account names are unique per run whatever the seed.
	Seed uint64

	// SharedPIDs says that the server's processes may have the same pid:
	// each in a PID namespace of its own, as the containers of a pod are
	// (every one pid 1). A pid then names no process, and the checks that
	// need one to are not made. Default false.
	SharedPIDs bool

	// Progress, when not nil, receives a one-line summary every
	// ReportEvery.
	Progress io.Writer

	// ReportEvery is the progress period; zero means no progress lines.
	ReportEvery time.Duration
}

func (c Config) withDefaults() Config {
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	c.Conns = cmp.Or(c.Conns, DefaultConns)
	c.Pipeline = cmp.Or(c.Pipeline, DefaultPipeline)
	c.Rate = cmp.Or(c.Rate, DefaultRate)
	c.Churn = cmp.Or(c.Churn, DefaultChurn)
	c.ChurnLimit = cmp.Or(c.ChurnLimit, DefaultChurnLimit)
	c.StallTimeout = cmp.Or(c.StallTimeout, DefaultStallTimeout)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.Accounts = cmp.Or(c.Accounts, DefaultAccounts)
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Pipeline < 0 || c.ChurnLimit < 0 || c.Accounts < 0 {
		errs = append(errs, errors.New("pipeline, churn limit and accounts must be positive"))
	}
	if c.Duration < 0 || c.StallTimeout < 0 || c.DrainTimeout < 0 || c.ReportEvery < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("loadcheck: invalid config: %w", err)
	}
	return nil
}
