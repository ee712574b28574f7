package result

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The goals the full mode is held to. The stall goals are stated for 1k
// and 10k connections while the benchmark runs 1k, 5k and 15k, so a run
// below splitConns is held to the 1k goal and one at or above it to the
// 10k goal, and each verdict names the scale it used.
const (
	stallGoalSmall = 10 * time.Millisecond // at 1k conns
	stallGoalLarge = 50 * time.Millisecond // at 10k conns
	splitConns     = 5000
	exitGoal       = time.Second // SIGHUP to the old process's exit, at 15k conns
	exitGoalConns  = 15000
	pauseGoal      = 3 // times the floor
	// Rolling mode's longest stall, at 10k conns, is held to this many
	// times the longest stall of the same load without upgrades: a
	// connection that moves alone should wait little more than the load
	// makes it wait anyway.
	stallVsNone = 2
)

// writeGoals evaluates the goals on the full-mode and rolling-mode runs
// (in scale order) and writes one line per goal and scale: "met", or
// "missed by" how much, and the figure behind the verdict.
func writeGoals(b *strings.Builder, runs []*Run) {
	var sections []string
	for _, write := range []func(*strings.Builder, []*Run){writeFullGoals, writeRollingGoals} {
		var s strings.Builder
		write(&s, runs)
		if s.Len() > 0 {
			sections = append(sections, s.String())
		}
	}
	b.WriteString(strings.Join(sections, "\n"))
}

// modeRuns returns the runs of mode, keeping their order.
func modeRuns(runs []*Run, mode string) []*Run {
	return slices.DeleteFunc(slices.Clone(runs), func(r *Run) bool { return r.Mode != mode })
}

func writeFullGoals(b *strings.Builder, runs []*Run) {
	full := modeRuns(runs, ModeFull)
	if len(full) == 0 {
		return
	}
	b.WriteString("Goals, full mode:\n\n")
	for _, r := range full {
		b.WriteString(goalNoLoss(r))
	}
	for _, r := range full {
		b.WriteString(goalStall(r))
	}
	b.WriteString(goalExit(full[len(full)-1]))
	for _, r := range full {
		b.WriteString(goalPause(r))
	}
}

// writeRollingGoals holds rolling mode to (a), as full mode, and to (e):
// its longest stall against that of the run without upgrades at the same
// scale.
func writeRollingGoals(b *strings.Builder, runs []*Run) {
	rolling := modeRuns(runs, ModeRolling)
	if len(rolling) == 0 {
		return
	}
	b.WriteString("Goals, rolling mode:\n\n")
	for _, r := range rolling {
		b.WriteString(goalNoLoss(r))
	}
	baseline := modeRuns(runs, ModeNone)
	for _, r := range rolling {
		i := slices.IndexFunc(baseline, func(n *Run) bool { return n.Conns == r.Conns })
		var base *Run
		if i >= 0 {
			base = baseline[i]
		}
		b.WriteString(goalStallVsNone(r, base))
	}
}

// goalStallVsNone compares r's longest stall with base's, the run
// without upgrades at the same scale (nil if there is none).
func goalStallVsNone(r, base *Run) string {
	head := fmt.Sprintf("- (e) longest stall within %dx that of the same load without upgrades (none) "+
		"at %d conns (goal stated for 10k): ", stallVsNone, r.Conns)
	if base == nil || base.MaxStall == 0 {
		return head + fmt.Sprintf("not measured — rolling %s, no run without upgrades at this scale\n",
			fmtDur(r.MaxStall))
	}
	limit := stallVsNone * base.MaxStall
	verdict := "met"
	if r.MaxStall > limit {
		verdict = "missed by " + fmtDur(r.MaxStall-limit)
	}
	return head + fmt.Sprintf("%s — rolling %s, none %s (over its whole run), %s\n",
		verdict, fmtDur(r.MaxStall), fmtDur(base.MaxStall), fmtRatio(r.MaxStall, base.MaxStall))
}

func goalNoLoss(r *Run) string {
	var misses []string
	miss := func(n uint64, what string) {
		if n > 0 {
			misses = append(misses, fmt.Sprintf("%d %s", n, what))
		}
	}
	miss(uint64(max(r.Conns-r.ConnsSurvived, 0)), "conns")
	miss(r.Lost, "lost")
	miss(r.Duplicated, "dup")
	miss(r.Failed, "failed")
	miss(r.Refused, "refused")
	verdict := "met"
	if len(misses) > 0 {
		verdict = "missed by " + strings.Join(misses, ", ")
	}
	return fmt.Sprintf("- (a) all connections survive, no request lost, duplicated or failed, none refused, at %d conns: %s — %s survived, %d lost, %d dup, %d failed, %d refused\n",
		r.Conns, verdict, fmtSurvived(r.ConnsSurvived, r.Conns), r.Lost, r.Duplicated, r.Failed, r.Refused)
}

func goalStall(r *Run) string {
	limit, stated := stallGoalSmall, "1k"
	if r.Conns >= splitConns {
		limit, stated = stallGoalLarge, "10k"
	}
	return fmt.Sprintf("- (b) longest stall under %s at %d conns (goal stated for %s): %s — %s\n",
		fmtDur(limit), r.Conns, stated, under(r.MaxStall, limit), fmtDur(r.MaxStall))
}

// goalExit takes the largest scale measured, which names itself when it
// is not the 15k the goal is stated for.
func goalExit(r *Run) string {
	scale := fmt.Sprintf("at %d conns", r.Conns)
	if r.Conns != exitGoalConns {
		scale += fmt.Sprintf(" (largest measured; goal stated for %dk)", exitGoalConns/1000)
	}
	head := fmt.Sprintf("- (c) SIGHUP to old process exit under %s %s: ", fmtDur(exitGoal), scale)
	if len(r.Upgrades) == 0 {
		return head + "not measured, no upgrades\n"
	}
	longest := r.longestUpgrade()
	return head + fmt.Sprintf("%s — longest of %d upgrades %s\n",
		under(longest, exitGoal), len(r.Upgrades), fmtDur(longest))
}

func goalPause(r *Run) string {
	head := fmt.Sprintf("- (d) pause within %dx the floor at %d conns: ", pauseGoal, r.Conns)
	if r.Pause == 0 || r.Floor == 0 {
		return head + fmt.Sprintf("not measured — pause %s, floor %s\n", fmtOptDur(r.Pause), fmtOptDur(r.Floor))
	}
	limit := pauseGoal * r.Floor
	verdict := "met"
	if r.Pause > limit {
		verdict = "missed by " + fmtDur(r.Pause-limit)
	}
	return head + fmt.Sprintf("%s — pause %s, %s floor %s\n",
		verdict, fmtDur(r.Pause), fmtRatio(r.Pause, r.Floor), fmtDur(r.Floor))
}

// under is the verdict on "v under limit".
func under(v, limit time.Duration) string {
	if v < limit {
		return "met"
	}
	return "missed by " + fmtDur(v-limit)
}
