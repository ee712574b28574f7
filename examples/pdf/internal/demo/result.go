package demo

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/loadcheck"
)

// Step is one upgrade of the scenario.
type Step struct {
	From, To string // version labels: "v1", "v2", or "broken"
	// Via is how the upgrade was asked for: "SIGHUP" or "handoffctl".
	Via string
	// WantFail says the new binary dies at once, so the upgrade must fail
	// and OldPID carry on.
	WantFail bool
	// OldPID served before the upgrade, NewPID after it; equal for a step
	// that failed as it should.
	OldPID, NewPID int
	// Took is from SIGHUP or the start of handoffctl until the old process
	// was gone, or for a step that must fail, until the failure was logged.
	Took time.Duration
	// CtlOutput holds handoffctl's output lines and CtlExit its exit
	// status; set only when Via is "handoffctl".
	CtlOutput []string
	CtlExit   int
	// Before and After are the counters on /metrics just before
	// handoffctl ran and after the step, from the process serving then;
	// set only when Via is "handoffctl" (After only if the step got that
	// far).
	Before, After Counters
	// Err says what went otherwise than expected; empty if nothing did.
	Err string
}

// OK reports whether the step did what it should: hand over, or fail and
// leave the old process serving.
func (s Step) OK() bool { return s.Err == "" }

func (s Step) String() string {
	arrow := fmt.Sprintf("%s → %s", s.From, s.To)
	via := s.Via
	if s.Via == viaCtl {
		via = fmt.Sprintf("handoffctl (exit %d)", s.CtlExit)
	}
	switch {
	case !s.OK():
		return fmt.Sprintf("%-12s FAILED        pid %d, via %s: %s", arrow, s.OldPID, via, s.Err)
	case s.WantFail:
		return fmt.Sprintf("%-12s failed as expected; pid %d kept serving, failure logged %v after %s",
			arrow, s.OldPID, ms(s.Took), via)
	default:
		return fmt.Sprintf("%-12s ok            pid %d → %d, %s to old exit %v", arrow, s.OldPID, s.NewPID, via, ms(s.Took))
	}
}

// CountersContinued reports whether a handoffctl step's counters went on
// from where they were: pdf_requests_total not lower after the upgrade,
// and handoff_upgrades_total up by exactly one, committed for a good
// binary and rolled_back for the broken one. False for other steps.
func (s Step) CountersContinued() bool { return s.Via == viaCtl && s.countersErr() == nil }

func (s Step) countersErr() error {
	b, a := s.Before, s.After
	if a.Requests < b.Requests {
		return fmt.Errorf("pdf_requests_total fell across the upgrade: %.0f → %.0f", b.Requests, a.Requests)
	}
	wantCommitted, wantRolledBack := 1.0, 0.0
	if s.WantFail {
		wantCommitted, wantRolledBack = 0, 1
	}
	if a.Committed-b.Committed != wantCommitted || a.RolledBack-b.RolledBack != wantRolledBack {
		return fmt.Errorf("handoff_upgrades_total committed %.0f → %.0f, rolled_back %.0f → %.0f; want +%.0f and +%.0f",
			b.Committed, a.Committed, b.RolledBack, a.RolledBack, wantCommitted, wantRolledBack)
	}
	return nil
}

// CountersLine describes a handoffctl step's counters for a person; empty
// for other steps.
func (s Step) CountersLine() string {
	if s.Via != viaCtl {
		return ""
	}
	b, a := s.Before, s.After
	verdict := "counters continued"
	if !s.CountersContinued() {
		verdict = "counters did NOT continue"
	}
	result, from, to := "committed", b.Committed, a.Committed
	if s.WantFail {
		result, from, to = "rolled_back", b.RolledBack, a.RolledBack
	}
	return fmt.Sprintf("%s: pdf_requests_total %.0f → %.0f; %s %.0f → %.0f",
		verdict, b.Requests, a.Requests, result, from, to)
}

// Result is what a run of the scenario found.
type Result struct {
	// Dir is the work directory; gone after a pass if Run made it.
	Dir string
	// Conns is the number of persistent connections the load asked for.
	Conns int
	// Settle is the load's time before, between and after the upgrades.
	Settle time.Duration
	// Planned is the number of upgrade steps in the scenario; Steps holds
	// those that ran, in order. A step that went wrong ends the run.
	Planned int
	Steps   []Step
	// Load is loadcheck's report for the whole run.
	Load loadcheck.Report
	// StatsChecks counts the STATS requests made on the demo account
	// under v2, StatsWrong those not answered "STATS 800 2".
	StatsChecks, StatsWrong int
	// FinalVersion is what VERSION said on a fresh connection after the
	// last step.
	FinalVersion string
	// StoppedCleanly says the last server exited on SIGTERM.
	StoppedCleanly bool
	// Problems describes failures found outside the steps and the load.
	Problems []string
}

// Check is one verdict of a run.
type Check struct {
	Name string
	Pass bool
}

// Checks returns every verdict of the run, in a fixed order.
func (r Result) Checks() []Check {
	servers := r.upgrades() + 1
	ld := r.Load
	return []Check{
		{"every upgrade step did what it should", len(r.Steps) == r.Planned && r.stepsOK()},
		{"load: every reply right, none lost or duplicated, no drop, stall or refusal", ld.OK()},
		{"every persistent connection survived and passed the final check",
			int(ld.Conns) == r.Conns && int(ld.FinalOK) == r.Conns},
		{fmt.Sprintf("every persistent connection was served by all %d processes", servers),
			ld.ConnPidsMin == servers && ld.ConnPidsMax == servers},
		{"the load met exactly the processes the upgrades made", slices.Equal(ld.Pids, r.pids())},
		{"new connections were served", ld.ChurnOK > 0},
		{"the counters on /metrics continued across each handoffctl upgrade, which counted itself",
			r.countersContinued()},
		{"STATS under v2 counted the charges made under v1", r.StatsCarried()},
		{"VERSION says v1 after the last step", strings.HasPrefix(r.FinalVersion, labelV1+".")},
		{"the last server stopped on SIGTERM", r.StoppedCleanly},
		{"no other problem", len(r.Problems) == 0},
	}
}

// OK reports whether every check passed.
func (r Result) OK() bool {
	for _, c := range r.Checks() {
		if !c.Pass {
			return false
		}
	}
	return true
}

// StatsCarried reports whether STATS was asked under v2 and always
// counted the two charges made under v1.
func (r Result) StatsCarried() bool { return r.StatsChecks > 0 && r.StatsWrong == 0 }

// countersContinued reports whether every handoffctl step in the plan ran
// and its counters continued.
func (r Result) countersContinued() bool {
	n := 0
	for _, s := range r.Steps {
		if s.Via == viaCtl {
			if !s.CountersContinued() {
				return false
			}
			n++
		}
	}
	want := 0
	for _, ps := range plan {
		if ps.via == viaCtl {
			want++
		}
	}
	return n == want
}

func (r Result) stepsOK() bool {
	for _, s := range r.Steps {
		if !s.OK() {
			return false
		}
	}
	return true
}

// upgrades counts the steps that handed over to a new process.
func (r Result) upgrades() int {
	n := 0
	for _, s := range r.Steps {
		if s.OK() && !s.WantFail {
			n++
		}
	}
	return n
}

// pids lists the processes that served, sorted.
func (r Result) pids() []int {
	var pids []int
	for i, s := range r.Steps {
		if i == 0 {
			pids = append(pids, s.OldPID)
		}
		if s.OK() && !slices.Contains(pids, s.NewPID) {
			pids = append(pids, s.NewPID)
		}
	}
	slices.Sort(pids)
	return pids
}
