package handoff

import (
	"errors"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// Status is what an operator asks a process: who it is, where its chain of
// upgrades stands, what it serves, and how its last upgrade went.
type Status struct {
	PID        int
	Version    string
	Phase      string    // the process's: ProcessStarting, ProcessServing, and so on
	Generation uint64    // upgrades the chain has committed before this process served
	ChainStart time.Time // when the chain's first process started
	Start      time.Time // when this process started (New)
	Conns      map[string]int
	Totals     Totals
	Last       *UpgradeResult // this process's last upgrade; nil before one
	// TakenOver is the upgrade that started this process, as the old one
	// timed it (in Rolling mode with the moves counted here as they
	// come); nil in a first process.
	TakenOver *UpgradeResult
}

// The phases of a process, as Status.Phase names them: the control
// socket's status says them, and /ready of package metrics gives them as
// its reason.
const (
	ProcessStarting   = "starting"    // Ready has not returned
	ProcessServing    = "serving"     // Serving is true
	ProcessUpgrading  = "upgrading"   // handing over, or rolling back
	ProcessHandedOver = "handed-over" // a successor serves; this process exits soon
	ProcessStopped    = "stopped"     // Stop was called, or the takeover failed
)

// Totals count the upgrades of the whole chain: a new process starts from
// its old process's values, so that they never go back at an upgrade.
type Totals struct {
	Committed       uint64
	RolledBack      map[string]uint64 // by Cause
	ConnsHandedOver uint64
}

// UpgradeResult is how an upgrade ended.
type UpgradeResult struct {
	Committed  bool
	From       int    // the old process's pid: this one, or in TakenOver its parent
	Err        error  // why it rolled back; nil if it committed
	Cause      string // a short name for Err, see Cause
	To         int    // the new process's pid; 0 if none started
	Binary     string
	Began      time.Time
	Took       time.Duration
	StateBytes uint64
	Stats      UpgradeStats
}

// Causes of a rollback, as UpgradeResult.Cause names them: few and stable,
// for metrics labels.
const (
	CauseStart        = "start"         // the binary could not be started
	CauseExited       = "exited"        // the new process exited
	CauseTimeout      = "timeout"       // Options.UpgradeTimeout, or the caller's deadline
	CausePauseTimeout = "pause_timeout" // Options.PauseTimeout
	CauseRejected     = "rejected"      // the new process refused (its LoadState, say)
	CauseOtherApp     = "other_app"     // the new binary is another application (Options.App)
	CauseProtocol     = "protocol"      // a malformed or unexpected frame
	CauseStopped      = "stopped"       // Stop was called
	CauseRefused      = "refused"       // not started: another runs, not ready, stopped
	CauseOther        = "other"
)

// Event is one phase of an upgrade, as it ends, in the old process.
type Event struct {
	// Phase is the phase's name: PhaseStarted, PhaseConnected, PhaseFds,
	// PhasePark, PhaseParked, PhaseState, PhaseReady, PhaseMove (Rolling
	// mode), then PhaseCommitted or PhaseRolledBack, the last.
	Phase string
	Took  time.Duration // the phase's own time; the last event's: the whole upgrade's
	PID   int           // the new process
	Conns int           // connections concerned, where it applies
	Bytes uint64        // state bytes, where it applies
	Err   error         // rolled_back: why
}

// causeOf names the kind of err for metrics.
func causeOf(err error) string {
	switch {
	case errors.Is(err, ErrUpgradeInProgress), errors.Is(err, ErrNotReady), errors.Is(err, ErrStopped),
		errors.Is(err, ErrHandedOver), errors.Is(err, ErrNotSupported):
		return CauseRefused
	case errors.Is(err, errStopping):
		return CauseStopped
	case errors.Is(err, errPauseTimeout):
		return CausePauseTimeout
	case errors.Is(err, errTimeout):
		return CauseTimeout
	case errors.Is(err, errStart):
		return CauseStart
	case errors.Is(err, errExited):
		return CauseExited
	case errors.Is(err, errOtherApp):
		return CauseOtherApp
	case errors.Is(err, ErrRejected):
		return CauseRejected
	case errors.Is(err, ErrProtocol):
		return CauseProtocol
	}
	return CauseOther
}

// Markers wrapped by the errors of an upgrade, for causeOf.
var (
	errTimeout      = errors.New("timed out")
	errPauseTimeout = errors.New("connections paused for too long")
	errStart        = errors.New("could not start the new process")
	errExited       = errors.New("the new process exited")
	errOtherApp     = errors.New("the new binary is another application")
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

// Carry makes one of the application's values continue across upgrades,
// typically a counter, so that rate() and increase() do not jump: in the
// old process read is called with every connection parked, and in the new
// process restore is called with that value before any connection is
// served (for a counter: its Add method). Call it before Ready, with the
// same name in every version; a name the new process did not register is
// dropped. One call per value. ListenersOnly mode carries values too.
func (u *Upgrader) Carry(name string, read func() float64, restore func(float64)) {
	u.chain.mu.Lock()
	defer u.chain.mu.Unlock()
	u.chain.carries[name] = carry{read: read, restore: restore}
}

// snapshot is what the old process sends: its generation, chain start,
// totals and the carried values, read now.
func (c *chain) snapshot() carried {
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
	c.mu.Unlock()
	for name, cr := range carries {
		v.values["app."+name] = cr.read()
	}
	c.mu.Lock()
	return v
}

// adopt makes the new process continue the chain the old one sent, with
// the upgrade that just committed counted, and restores the application's
// values. Called on COMMIT, before any connection is served.
func (c *chain) adopt(v carried, conns int) {
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
	for name, restore := range restores {
		restore(v.values["app."+name])
	}
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

func (v carried) frame() wire.Carry {
	return wire.Carry{Generation: v.generation, Start: v.start, Values: v.values}
}

func carriedOf(f wire.Carry) carried {
	return carried{generation: f.Generation, start: f.Start, values: f.Values}
}

// Status returns a snapshot of this process for an operator.
func (u *Upgrader) Status() Status { return u.status() }

func (u *core) status() Status {
	p, last, takenOver := u.m.snapshot()
	st := Status{PID: os.Getpid(), Version: u.opts.Version, Phase: p.String(), Start: u.started,
		Last: last, TakenOver: takenOver}
	u.chain.mu.Lock()
	st.Generation, st.ChainStart = u.chain.generation, u.chain.start
	st.Totals = Totals{Committed: u.chain.totals.Committed, ConnsHandedOver: u.chain.totals.ConnsHandedOver,
		RolledBack: map[string]uint64{}}
	for k, v := range u.chain.totals.RolledBack {
		st.Totals.RolledBack[k] = v
	}
	u.chain.mu.Unlock()
	st.Conns = map[string]int{}
	for _, c := range u.reg.live() {
		st.Conns[c.Kind()]++
	}
	return st
}

func (p phase) String() string {
	switch p {
	case phaseStarting:
		return ProcessStarting
	case phaseServing:
		return ProcessServing
	case phaseUpgrading:
		return ProcessUpgrading
	case phaseHandedOver:
		return ProcessHandedOver
	}
	return ProcessStopped
}

// Serving reports whether this process should get traffic: Ready has
// returned, and it is neither upgrading, handed over nor stopping. A load
// balancer's readiness check.
func (u *Upgrader) Serving() bool {
	return u.m.serving()
}

// commitInfo is COMMIT's payload: the committed upgrade's phases as the
// old process timed them.
type commitInfo struct {
	began      time.Time
	stats      UpgradeStats
	stateBytes uint64
}

// durations are the phases COMMIT carries, in their order on the wire.
func (c *commitInfo) durations() []*time.Duration {
	st := &c.stats
	return []*time.Duration{&st.Connected, &st.Fds, &st.Park, &st.Parked, &st.State, &st.Ready, &st.Commit}
}

func (c commitInfo) frame() wire.Commit {
	f := wire.Commit{Began: c.began, Conns: uint32(c.stats.Conns), Early: uint32(c.stats.Early), StateBytes: c.stateBytes}
	for i, d := range c.durations() {
		f.Phases[i] = *d
	}
	return f
}

func commitInfoOf(f wire.Commit) commitInfo {
	c := commitInfo{began: f.Began, stateBytes: f.StateBytes}
	for i, d := range c.durations() {
		*d = f.Phases[i]
	}
	c.stats.Conns, c.stats.Early = int(f.Conns), int(f.Early)
	return c
}

// result is the committed upgrade as the new process records it. COMMIT
// does not carry the mode: the new process has it from PLAN.
func (c commitInfo) result(binary string, from, to int, mode Mode) *UpgradeResult {
	r := &UpgradeResult{Committed: true, From: from, To: to, Binary: binary, Began: c.began,
		Took: time.Since(c.began), StateBytes: c.stateBytes, Stats: c.stats}
	r.Stats.Mode = mode
	return r
}

// movedIn counts n connections that a Rolling move brought to this new
// process, as they arrive: the totals and the upgrade that started it,
// whose COMMIT came before any of them moved.
func (u *core) movedIn(n int) {
	u.chain.mu.Lock()
	u.chain.totals.ConnsHandedOver += uint64(n)
	u.chain.mu.Unlock()
	u.m.movedIn(n)
}
