package handoff

import "time"

// UpgradeStats times the phases of the last upgrade, as the old process saw
// them. Conns counts, in Rolling mode, the connections moved after the
// commit: in the new process (Status().TakenOver) it grows as they arrive.
// The connections are paused from the start of Park to the end of Commit:
// the new process resumes them as COMMIT arrives. Fds, before the park,
// costs the clients nothing.
type UpgradeStats struct {
	Conns   int           // connections handed over (Rolling: moved)
	Early   int           // of them, sent before the park (the others were accepted since)
	Start   time.Duration // from the upgrade's start to the new process's HELLO
	Fds     time.Duration // sending every running connection's fd until the new process had adopted it
	Park    time.Duration // from asking to park to all parked
	Parked  time.Duration // sending the parked connections' unread bytes and state (and late fds)
	State   time.Duration // sending the global state
	Adopt   time.Duration // from the last byte sent to the new process's READY
	Commit  time.Duration // from READY to COMMIT sent: the decision
	Release time.Duration // closing this process's copies of the connections

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
	return s.Park + s.Parked + s.State + s.Adopt + s.Commit
}
