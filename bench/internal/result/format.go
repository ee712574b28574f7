package result

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// none stands in a cell for a figure the run did not measure, so that a
// missing figure is never mistaken for a zero.
const none = "—"

// durUnits are the units fmtDur chooses from, smallest first.
var durUnits = []struct {
	name string
	size time.Duration
}{
	{"ns", time.Nanosecond},
	{"µs", time.Microsecond},
	{"ms", time.Millisecond},
	{"s", time.Second},
}

// fmtDur writes d with three significant digits in the largest unit that
// keeps it at 1 or more ("850µs", "12.3ms", "1.02s"): the benchmark's
// figures span six orders of magnitude, and a fixed unit would hide
// either the small ones or the large ones.
func fmtDur(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	if d < 0 {
		return "-" + fmtDur(-d)
	}
	u := 0
	for u+1 < len(durUnits) && d >= durUnits[u+1].size {
		u++
	}
	v := float64(d) / float64(durUnits[u].size)
	s := sigDigits(v, 3)
	// Rounding can carry into the next unit: 999.9µs prints as 1000µs.
	if s == "1000" && u+1 < len(durUnits) {
		return "1" + durUnits[u+1].name
	}
	return s + durUnits[u].name
}

// sigDigits formats v (at least 1) with n significant digits and no
// trailing zeros after the point.
func sigDigits(v float64, n int) string {
	decimals := n - len(strconv.FormatFloat(v, 'f', 0, 64))
	s := strconv.FormatFloat(v, 'f', max(decimals, 0), 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// fmtOptDur is fmtDur with a zero meaning "not measured".
func fmtOptDur(d time.Duration) string {
	if d == 0 {
		return none
	}
	return fmtDur(d)
}

// fmtRatio writes a/b as "2.1x", or none when either is zero: a ratio
// against a floor that was not measured means nothing.
func fmtRatio(a, b time.Duration) string {
	if a == 0 || b == 0 {
		return none
	}
	return strconv.FormatFloat(float64(a)/float64(b), 'f', 1, 64) + "x"
}

// fmtSurvived writes "14990/15000 (99.9%)". The percentage rounds down,
// so that only a run that kept every connection shows 100%.
func fmtSurvived(survived, conns int) string {
	if conns == 0 {
		return none
	}
	pct := float64(survived) * 100 / float64(conns)
	pct = float64(int64(pct*10)) / 10
	return strconv.Itoa(survived) + "/" + strconv.Itoa(conns) +
		" (" + strconv.FormatFloat(pct, 'f', -1, 64) + "%)"
}

// fmtMB writes bytes as MB (10^6 bytes, as bench/README.md counts them).
func fmtMB(b int64) string {
	return strconv.FormatFloat(float64(b)/1e6, 'f', 1, 64)
}

// fmtChange writes "before→after", or none when neither was recorded.
func fmtChange(before, after int64, format func(int64) string) string {
	if before == 0 && after == 0 {
		return none
	}
	return format(before) + "→" + format(after)
}

func fmtInt(n int64) string { return strconv.FormatInt(n, 10) }

func fmtUint(n uint64) string { return strconv.FormatUint(n, 10) }

// escapeCell keeps a free-text value from splitting a table row.
func escapeCell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}

// codeSpan quotes s as inline code, with a fence longer than any run of
// backticks inside it, as CommonMark requires.
func codeSpan(s string) string {
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		s = " " + s + " "
	}
	return fence + s + fence
}

// modeOrder is the order modes are shown in: the handoff's two modes
// first, then the two upgrade baselines they are measured against, then
// the run without upgrades.
var modeOrder = []string{ModeFull, ModeFullNoPrecopy, ModeRolling, ModeListeners, ModeRestart, ModeNone}

// modeRank places unknown modes after the known ones.
func modeRank(mode string) int {
	if i := slices.Index(modeOrder, mode); i >= 0 {
		return i
	}
	return len(modeOrder)
}

// sortedRuns returns the runs grouped by scale, modes in modeOrder within
// a scale, so that the rows to compare sit next to each other.
func sortedRuns(runs []Run) []*Run {
	out := make([]*Run, len(runs))
	for i := range runs {
		out[i] = &runs[i]
	}
	slices.SortStableFunc(out, func(a, b *Run) int {
		if a.Conns != b.Conns {
			return a.Conns - b.Conns
		}
		if ra, rb := modeRank(a.Mode), modeRank(b.Mode); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Mode, b.Mode)
	})
	return out
}

// median of ds, which it sorts; zero for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	m := len(ds) / 2
	if len(ds)%2 == 1 {
		return ds[m]
	}
	return ds[m-1] + (ds[m]-ds[m-1])/2
}
