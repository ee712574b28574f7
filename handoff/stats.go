package handoff

import "time"

// The phases of an upgrade, in their order, as the old process sees them.
// Each has one name, the same everywhere: Event.Phase, UpgradeStats's
// fields (capitalized), the log, the handoff_upgrade_phase_seconds label
// (package metrics), the control socket's phase lines and phases_ns, and
// handoffctl. A phase is named for what it does or, where a frame of the
// new process's ends it, for what that frame says (HELLO: connected,
// READY: ready).
const (
	PhaseStarted   = "started"   // the new process started; an Event only (Connected includes it)
	PhaseConnected = "connected" // from the upgrade's start to the new process's HELLO
	PhaseFds       = "fds"       // every running connection's fd sent and adopted, before the park
	PhasePark      = "park"      // from asking every connection to park to all parked
	PhaseParked    = "parked"    // the parked connections' unread bytes and state sent (and late fds)
	PhaseState     = "state"     // the global state sent
	PhaseReady     = "ready"     // from the last byte sent to the new process's READY
	PhaseCommit    = "commit"    // from READY to COMMIT sent: the decision
	PhaseRelease   = "release"   // this process's copies of the connections closed
	PhaseMove      = "move"      // Rolling mode: from COMMIT to the last connection moved
	PhasePause     = "pause"     // no phase of its own: the connections not served (UpgradeStats.Pause)
)

// How an upgrade ended: the Phase of its last Event, whose Took is the
// whole upgrade's, and the result label of handoff_upgrades_total.
const (
	PhaseCommitted  = "committed"
	PhaseRolledBack = "rolled_back"
)

// Phases lists the phases UpgradeStats times, in their order, Pause last.
var Phases = []string{PhaseConnected, PhaseFds, PhasePark, PhaseParked, PhaseState, PhaseReady,
	PhaseCommit, PhaseRelease, PhaseMove, PhasePause}

// UpgradeStats times the phases of the last upgrade, as the old process saw
// them; each field is the phase of its name (the Phase constants). Conns
// counts, in Rolling mode, the connections moved after the commit: in the
// new process (Status().TakenOver) it grows as they arrive. The
// connections are paused from the start of Park to the end of Commit: the
// new process resumes them as COMMIT arrives. Fds, before the park, costs
// the clients nothing.
type UpgradeStats struct {
	Conns     int           // connections handed over (Rolling: moved)
	Early     int           // of them, sent before the park (the others were accepted since)
	Connected time.Duration // from the upgrade's start to the new process's HELLO
	Fds       time.Duration // sending every running connection's fd until the new process had adopted it
	Park      time.Duration // from asking to park to all parked
	Parked    time.Duration // sending the parked connections' unread bytes and state (and late fds)
	State     time.Duration // sending the global state
	Ready     time.Duration // from the last byte sent to the new process's READY
	Commit    time.Duration // from READY to COMMIT sent: the decision
	Release   time.Duration // closing this process's copies of the connections

	// Rolling mode: after the commit, the connections move one by one.
	Mode    Mode          // the upgrade's mode
	Move    time.Duration // from COMMIT to the last connection moved (or the deadline)
	MaxWait time.Duration // the longest a connection waited, parked, to be sent
	Stayed  int           // connections left to drain here at the deadline
	Closed  int           // connections closed at the deadline
}

// Pause is how long the connections were not served. Only AllAtOnce
// pauses them all: in Rolling mode each waits MaxWait at most, for its own
// move, and in ListenersOnly mode none moves; Pause is 0 for both.
func (s UpgradeStats) Pause() time.Duration {
	if !s.Mode.pausesAll() {
		return 0
	}
	return s.Park + s.Parked + s.State + s.Ready + s.Commit
}

// Took returns how long the phase named phase (one of Phases) took, and 0
// for a name that is not among them.
func (s UpgradeStats) Took(phase string) time.Duration {
	switch phase {
	case PhaseConnected:
		return s.Connected
	case PhaseFds:
		return s.Fds
	case PhasePark:
		return s.Park
	case PhaseParked:
		return s.Parked
	case PhaseState:
		return s.State
	case PhaseReady:
		return s.Ready
	case PhaseCommit:
		return s.Commit
	case PhaseRelease:
		return s.Release
	case PhaseMove:
		return s.Move
	case PhasePause:
		return s.Pause()
	}
	return 0
}
