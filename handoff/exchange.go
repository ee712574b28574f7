package handoff

import (
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// What the two sides of an upgrade agree and exchange besides fds: the
// plan, the commit's timings and the chain's carried values, as frames
// of package wire.

// plan is the PLAN frame: the mode, how many connections' fds the old
// process sends early, while it still serves them, whether its
// application's state follows (it has SaveState), so that a new process
// that could not load it refuses before anything is paused, and whether
// it offers a pre-copy of that state (Options.Precopy), which the new
// process answers with PRECOPY.
type plan struct {
	mode    Mode
	early   uint32
	state   bool
	precopy bool
}

// frame is p as PLAN says it.
func (p plan) frame() wire.Plan {
	return wire.Plan{Mode: uint8(p.mode), Early: p.early, State: p.state, Precopy: p.precopy}
}

// planOf reads a PLAN, which must ask only what its mode allows.
func planOf(f wire.Plan) (plan, error) {
	p := plan{mode: Mode(f.Mode), early: f.Early, state: f.State, precopy: f.Precopy}
	if p.mode >= modes {
		return p, protoErr("PLAN names mode %d, which this version does not know", uint8(p.mode))
	}
	if !p.mode.sendsEarlyFds() && p.early > 0 {
		return p, protoErr("PLAN sends %d connections early in mode %s", p.early, p.mode)
	}
	if !p.mode.sendsState() && p.state {
		return p, protoErr("PLAN sends state in mode %s", p.mode)
	}
	if !p.mode.precopies() && p.precopy {
		return p, protoErr("PLAN offers a pre-copy in mode %s", p.mode)
	}
	return p, nil
}

func (v carried) frame() wire.Carry {
	return wire.Carry{Generation: v.generation, Start: v.start, Values: v.values}
}

func carriedOf(f wire.Carry) carried {
	return carried{generation: f.Generation, start: f.Start, values: f.Values}
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
