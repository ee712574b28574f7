package result

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The cost goals (issue 21), each a ratio measured in one run: to the
// floors measured alone before each scale, or to the run without
// upgrades (none) at the same scale.
const (
	pauseVsFloor       = 2.0 // full: pause + resume, times the pause floor
	fullStallVsNone    = 3.0 // full: longest stall, times none's
	exitVsFloor        = 1.5 // SIGHUP to the old process's exit at the largest scale, times the fd floor
	rollingStallVsNone = 1.5 // rolling: longest stall, times none's
	moveVsFloor        = 1.5 // rolling: the move at the largest scale, times the fd floor
	rssGrowth          = 1.2 // RSS after the upgrades, times before
	rssTakeover        = 1.0 // the new process's RSS right after a takeover, times the old one's
	maxParkedWait      = 10 * time.Millisecond
	maxStatePause      = 50 * time.Millisecond // full, with a large state (-accounts): the pause
)

// writeCostGoals holds the full and rolling runs to the cost goals, one
// line per goal and scale: "met", or "missed", with the figures.
func writeCostGoals(b *strings.Builder, runs []*Run) {
	full, rolling := modeRuns(runs, ModeFull), modeRuns(runs, ModeRolling)
	if len(full)+len(rolling) == 0 {
		return
	}
	base := func(r *Run) *Run {
		for _, n := range modeRuns(runs, ModeNone) {
			if n.Conns == r.Conns {
				return n
			}
		}
		return nil
	}
	b.WriteString("\nCost goals (issue 21), ratios within this run:\n\n")
	for _, r := range full {
		b.WriteString(ratioGoal("full: pause + resume within "+fmtK(pauseVsFloor)+" the pause floor", r.Conns,
			r.PauseResumed, r.PauseFloor, pauseVsFloor))
		b.WriteString(stallGoal("full", r, base(r), fullStallVsNone))
	}
	for _, r := range rolling {
		b.WriteString(stallGoal("rolling", r, base(r), rollingStallVsNone))
		b.WriteString(waitGoal(r))
	}
	for _, rs := range [][]*Run{full, rolling} {
		if len(rs) == 0 {
			continue
		}
		r := rs[len(rs)-1]
		b.WriteString(ratioGoal(r.Mode+": SIGHUP→exit within "+fmtK(exitVsFloor)+" the fd floor (largest scale)", r.Conns,
			r.longestUpgrade(), r.Floor, exitVsFloor))
		if r.Mode == ModeRolling {
			b.WriteString(ratioGoal("rolling: the move within "+fmtK(moveVsFloor)+" the fd floor (largest scale)", r.Conns,
				r.longestPhase("move"), r.Floor, moveVsFloor))
		}
	}
	for _, r := range append(slices.Clone(full), rolling...) {
		b.WriteString(rssGoal(r))
		b.WriteString(takeoverRSSGoal(r))
	}
	for _, r := range full {
		if r.Accounts > 0 {
			b.WriteString(statePauseGoal(r, modeRuns(runs, ModeFullNoPrecopy)))
		}
	}
}

// statePauseGoal is the verdict on the pause of a full run with a large
// state, next to the same run without the pre-copy if there is one.
func statePauseGoal(r *Run, whole []*Run) string {
	head := fmt.Sprintf("- full: the pause with %d accounts of state at most %s, at %d conns: ",
		r.Accounts, fmtDur(maxStatePause), r.Conns)
	if r.Pause == 0 {
		return head + "not measured\n"
	}
	verdict := "met"
	if r.Pause > maxStatePause {
		verdict = "missed"
	}
	line := head + fmt.Sprintf("%s — %s", verdict, fmtDur(r.Pause))
	for _, w := range whole {
		if w.Conns == r.Conns && w.Accounts == r.Accounts && w.Pause > 0 {
			line += fmt.Sprintf(" (without the pre-copy: %s, %s)", fmtDur(w.Pause), fmtRatio(w.Pause, r.Pause))
		}
	}
	return line + "\n"
}

// ratioGoal is the verdict on "v within k times base".
func ratioGoal(what string, conns int, v, base time.Duration, k float64) string {
	head := fmt.Sprintf("- %s, at %d conns: ", what, conns)
	if v == 0 || base == 0 {
		return head + fmt.Sprintf("not measured — %s against %s\n", fmtOptDur(v), fmtOptDur(base))
	}
	return head + fmt.Sprintf("%s — %s against %s, %s\n",
		verdictRatio(float64(v)/float64(base), k), fmtDur(v), fmtDur(base), fmtRatio(v, base))
}

func stallGoal(mode string, r, base *Run, k float64) string {
	what := fmt.Sprintf("%s: longest stall within %s that of none", mode, fmtK(k))
	if base == nil {
		return fmt.Sprintf("- %s, at %d conns: not measured — no run without upgrades at this scale\n", what, r.Conns)
	}
	return ratioGoal(what, r.Conns, r.MaxStall, base.MaxStall, k)
}

func waitGoal(r *Run) string {
	w := r.longestPhase("max_wait")
	head := fmt.Sprintf("- rolling: a parked connection waits at most %s, at %d conns: ", fmtDur(maxParkedWait), r.Conns)
	if w == 0 {
		return head + "not measured\n"
	}
	verdict := "met"
	if w > maxParkedWait {
		verdict = "missed"
	}
	return head + fmt.Sprintf("%s — longest %s\n", verdict, fmtDur(w))
}

func rssGoal(r *Run) string {
	head := fmt.Sprintf("- %s: RSS after the upgrades within %s before, at %d conns: ", r.Mode, fmtK(rssGrowth), r.Conns)
	if r.RSSBefore == 0 || r.RSSAfter == 0 {
		return head + "not measured\n"
	}
	ratio := float64(r.RSSAfter) / float64(r.RSSBefore)
	return head + fmt.Sprintf("%s — %s MB, %sx\n", verdictRatio(ratio, rssGrowth),
		fmtChange(r.RSSBefore, r.RSSAfter, fmtMB), strconv.FormatFloat(ratio, 'f', 2, 64))
}

// takeoverRSSGoal is the verdict on the new process's RSS right after
// each takeover against the old one's just before its SIGHUP: the
// upgrade with the largest ratio.
func takeoverRSSGoal(r *Run) string {
	head := fmt.Sprintf("- %s: the new process's RSS right after a takeover within %s the old one's, at %d conns: ",
		r.Mode, fmtK(rssTakeover), r.Conns)
	var worst *Upgrade
	for i, u := range r.Upgrades {
		if u.RSSOld > 0 && u.RSSNew > 0 && (worst == nil || u.RSSNew*worst.RSSOld > worst.RSSNew*u.RSSOld) {
			worst = &r.Upgrades[i]
		}
	}
	if worst == nil {
		return head + "not measured\n"
	}
	ratio := float64(worst.RSSNew) / float64(worst.RSSOld)
	return head + fmt.Sprintf("%s — %s MB, %sx (the largest of %d)\n", verdictRatio(ratio, rssTakeover),
		fmtChange(worst.RSSOld, worst.RSSNew, fmtMB), strconv.FormatFloat(ratio, 'f', 3, 64), len(r.Upgrades))
}

// fmtK writes a goal's factor: "1.5x".
func fmtK(k float64) string { return strconv.FormatFloat(k, 'f', -1, 64) + "x" }

func verdictRatio(ratio, k float64) string {
	if ratio <= k {
		return "met"
	}
	return "missed"
}

// longestPhase is the longest phase over the upgrades that logged it.
func (r *Run) longestPhase(phase string) time.Duration {
	var d time.Duration
	for _, u := range r.Upgrades {
		d = max(d, u.Phases[phase])
	}
	return d
}
