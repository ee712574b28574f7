package result

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Markdown writes the suite as markdown: a line saying where and how it
// was measured, a table with one row per run, a table of the handoff's
// phases for the runs that logged them, and the goals of the full mode,
// each met or missed. Runs are grouped by scale so that the modes to
// compare sit in adjacent rows. A mode or scale with no run has no row.
// The text is built in memory and written to w in one call, so the only
// error is w's.
func (s *Suite) Markdown(w io.Writer) error {
	var b strings.Builder
	s.writeHeader(&b)
	runs := sortedRuns(s.Runs)
	writeRunTable(&b, runs)
	writePhaseTable(&b, runs)
	writeFloorTable(&b, s.Floors)
	writeGoals(&b, runs)
	writeCostGoals(&b, runs)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("result: write markdown: %w", err)
	}
	return nil
}

func (s *Suite) writeHeader(b *strings.Builder) {
	m := s.Machine
	fmt.Fprintf(b, "Machine: %s, %d cores, Linux %s, %s; rate %s req/s; ",
		m.CPU, m.Cores, m.Kernel, m.Go, strconv.FormatFloat(s.Rate, 'f', -1, 64))
	if !s.Started.IsZero() {
		fmt.Fprintf(b, "started %s; ", s.Started.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(b, "command: %s\n\n", codeSpan(s.Command))
}

// runColumns heads the main table; runCells fills one row in this order.
// "in" is inside upgrade windows, "out" outside them.
var runColumns = []string{
	"mode", "conns", "survived", "lost", "dup", "failed", "refused", "reset",
	"p50 in", "p99 in", "p99.9 in", "max in", "p99 out", "longest stall",
	"upgrades ok", "SIGHUP→exit", "pause", "floor", "pause/floor",
	"RSS MB", "fds", "server CPU/req",
}

func runCells(r *Run) []string {
	return []string{
		escapeCell(r.Mode), strconv.Itoa(r.Conns), fmtSurvived(r.ConnsSurvived, r.Conns),
		fmtUint(r.Lost), fmtUint(r.Duplicated), fmtUint(r.Failed), fmtUint(r.Refused), fmtUint(r.Reset),
		fmtLatency(r.InWindow, r.InWindow.P50), fmtLatency(r.InWindow, r.InWindow.P99),
		fmtLatency(r.InWindow, r.InWindow.P999), fmtLatency(r.InWindow, r.InWindow.Max),
		fmtLatency(r.OutWindow, r.OutWindow.P99), fmtDur(r.MaxStall),
		fmtUpgradesOK(r.Upgrades), fmtOptDur(r.longestUpgrade()),
		fmtOptDur(r.Pause), fmtOptDur(r.Floor), fmtRatio(r.Pause, r.Floor),
		fmtChange(r.RSSBefore, r.RSSAfter, fmtMB),
		fmtChange(int64(r.FdsBefore), int64(r.FdsAfter), fmtInt),
		fmtOptDur(r.ServerCPUPerReq),
	}
}

func writeRunTable(b *strings.Builder, runs []*Run) {
	if len(runs) == 0 {
		return
	}
	writeRow(b, runColumns)
	writeRule(b, len(runColumns), 2)
	for _, r := range runs {
		writeRow(b, runCells(r))
	}
	b.WriteString("\n")
	if slices.ContainsFunc(runs, func(r *Run) bool { return r.Mode == ModeNone }) {
		b.WriteString("`none` is the same load without any upgrade: it has no upgrade window, so no \"in\" " +
			"figures, and its longest stall is over the whole run (as every mode's is).\n\n")
	}
}

// fmtLatency writes v, a figure of l, or none when l counted no reply:
// a run without upgrades has no reply inside an upgrade window, and a
// zero there would read as a measurement.
func fmtLatency(l Latency, v time.Duration) string {
	if l.Count == 0 {
		return none
	}
	return fmtDur(v)
}

func writeFloorTable(b *strings.Builder, floors []Floor) {
	if len(floors) == 0 {
		return
	}
	b.WriteString("Floor, measured alone before the runs of each scale (median of 3):\n\n")
	cols := []string{"conns", "interrupt readers", "pass + convert fds", "of which net.FileConn", "floor", "per conn",
		"records + resume", "pause floor"}
	writeRow(b, cols)
	writeRule(b, len(cols), 1)
	for _, f := range floors {
		writeRow(b, []string{strconv.Itoa(f.Conns), fmtDur(f.Interrupt), fmtDur(f.Pass), fmtDur(f.Convert),
			fmtDur(f.Total()), fmtDur(f.Total() / time.Duration(max(f.Conns, 1))),
			fmtOptDur(f.Resume), fmtPauseFloor(f)})
	}
	b.WriteString("\n")
}

// fmtPauseFloor is f's pause floor, or none where its records and resume
// were not measured (results from before they were).
func fmtPauseFloor(f Floor) string {
	if f.Resume == 0 {
		return none
	}
	return fmtDur(f.Pause())
}

// phaseOrder is the order the handoff goes through its phases, as the
// library names them (handoff.Phases); a rolling move logs the last two. A
// phase not listed here (a newer handoff's) follows them, by name.
var phaseOrder = []string{"connected", "fds", "precopy", "park", "parked", "state", "ready", "commit", "resume", "move", "max_wait"}

// writePhaseTable writes the median of each phase over a run's upgrades:
// the median, not the worst, because this table says where an upgrade
// usually spends its time; the worst is in the main table.
func writePhaseTable(b *strings.Builder, runs []*Run) {
	phased := slices.DeleteFunc(slices.Clone(runs), func(r *Run) bool { return len(r.phaseNames()) == 0 })
	if len(phased) == 0 {
		return
	}
	names := allPhases(phased)
	b.WriteString("Upgrade phases, median over the upgrades:\n\n")
	writeRow(b, append([]string{"mode", "conns", "upgrades"}, names...))
	writeRule(b, 3+len(names), 2)
	for _, r := range phased {
		cells := []string{escapeCell(r.Mode), strconv.Itoa(r.Conns), strconv.Itoa(len(r.Upgrades))}
		for _, n := range names {
			cells = append(cells, r.medianPhase(n))
		}
		writeRow(b, cells)
	}
	b.WriteString("\n")
}

// allPhases lists the phases any of runs logged, in phaseOrder.
func allPhases(runs []*Run) []string {
	var names []string
	for _, r := range runs {
		for _, n := range r.phaseNames() {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.SortStableFunc(names, comparePhases)
	return names
}

func comparePhases(a, b string) int {
	ra, rb := phaseRank(a), phaseRank(b)
	if ra != rb {
		return ra - rb
	}
	return strings.Compare(a, b)
}

func phaseRank(name string) int {
	if i := slices.Index(phaseOrder, name); i >= 0 {
		return i
	}
	return len(phaseOrder)
}

// phaseNames lists the phases any upgrade of r logged.
func (r *Run) phaseNames() []string {
	var names []string
	for _, u := range r.Upgrades {
		for n := range u.Phases {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// medianPhase is the median of phase over the upgrades that logged it,
// or none when none did.
func (r *Run) medianPhase(phase string) string {
	var ds []time.Duration
	for _, u := range r.Upgrades {
		if d, ok := u.Phases[phase]; ok {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return none
	}
	return fmtDur(median(ds))
}

// longestUpgrade is the longest SIGHUP-to-exit of r's upgrades; zero
// when r has none.
func (r *Run) longestUpgrade() time.Duration {
	var longest time.Duration
	for _, u := range r.Upgrades {
		longest = max(longest, u.Duration)
	}
	return longest
}

func fmtUpgradesOK(us []Upgrade) string {
	if len(us) == 0 {
		return none
	}
	ok := 0
	for _, u := range us {
		if u.OK {
			ok++
		}
	}
	return strconv.Itoa(ok) + "/" + strconv.Itoa(len(us))
}

func writeRow(b *strings.Builder, cells []string) {
	b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

// writeRule writes the line under a header: the first textCols columns
// are text, left-aligned; the rest are figures, right-aligned.
func writeRule(b *strings.Builder, cols, textCols int) {
	b.WriteString("|")
	for i := range cols {
		if i < textCols {
			b.WriteString("---|")
		} else {
			b.WriteString("---:|")
		}
	}
	b.WriteString("\n")
}
