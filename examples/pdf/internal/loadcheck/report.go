package loadcheck

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of a run. Counters cover persistent and churn
// connections together. Durations marshal to JSON as nanoseconds.
type Report struct {
	Elapsed time.Duration `json:"elapsed_ns"`
	// Conns is the number of persistent connections that were established.
	Conns uint64 `json:"conns"`

	Sent      uint64 `json:"requests_sent"`
	RepliesOK uint64 `json:"replies_ok"`
	// Mismatches counts replies whose value, form or rid was wrong.
	Mismatches uint64 `json:"mismatches"`
	// Unexpected counts replies to no outstanding request: duplicates,
	// replies answered out of order, or replies nobody asked for.
	Unexpected uint64 `json:"unexpected"`
	// Missing counts requests on live connections that got no reply:
	// skipped over by a later reply, or still outstanding at a stall.
	Missing uint64 `json:"missing"`
	// Stalled counts connections on which no reply came (or no write went
	// out) for Config.StallTimeout while requests were outstanding.
	Stalled uint64 `json:"stalled"`
	// DroppedConns counts connections the server closed or reset.
	DroppedConns uint64 `json:"dropped_conns"`
	// LostInDrops counts requests outstanding on dropped connections.
	LostInDrops uint64 `json:"lost_in_drops"`
	// RefusedDials counts dials that failed, persistent or churn.
	RefusedDials uint64 `json:"refused_dials"`

	ChurnOK      uint64 `json:"churn_ok"`
	ChurnSkipped uint64 `json:"churn_skipped"`

	// Pids is every server pid a VERSION reply named, sorted.
	Pids []int `json:"pids"`
	// ConnPidsMin and ConnPidsMax bound how many distinct pids one
	// persistent connection saw: above one means it crossed an upgrade.
	ConnPidsMin int `json:"conn_pids_min"`
	ConnPidsMax int `json:"conn_pids_max"`
	// Versions counts VERSION replies per version string.
	Versions map[string]uint64 `json:"versions"`
	StatsOK  uint64            `json:"stats_ok"`
	// StatsV1 counts STATS answered "unknown-command", accepted because
	// the server may have been v1 at the time.
	StatsV1 uint64 `json:"stats_v1"`

	LatencyP50  time.Duration `json:"latency_p50_ns"`
	LatencyP99  time.Duration `json:"latency_p99_ns"`
	LatencyP999 time.Duration `json:"latency_p999_ns"`
	LatencyMax  time.Duration `json:"latency_max_ns"`
	// MaxStall is the longest a connection waited on its oldest
	// outstanding request with no reply arriving.
	MaxStall time.Duration `json:"max_stall_ns"`

	// FinalOK and FinalFailed count live persistent connections whose
	// end-of-run BALANCE and WHOAMI check passed or failed.
	FinalOK     uint64 `json:"final_ok"`
	FinalFailed uint64 `json:"final_failed"`

	// Errors holds the first few failures, described.
	Errors []string `json:"errors"`
	// Pass is OK() at the time the report was made.
	Pass bool `json:"ok"`
}

// OK reports whether the run saw no failure of any kind.
func (r Report) OK() bool {
	return r.Mismatches == 0 && r.Unexpected == 0 && r.Missing == 0 && r.Stalled == 0 &&
		r.DroppedConns == 0 && r.RefusedDials == 0 && r.FinalFailed == 0
}

func (s *stats) report(conns []*conn) Report {
	r := Report{
		Elapsed: time.Since(s.start), Conns: s.conns.Load(),
		Sent: s.sent.Load(), RepliesOK: s.ok.Load(), Mismatches: s.mismatches.Load(),
		Unexpected: s.unexpected.Load(), Missing: s.missing.Load(), Stalled: s.stalled.Load(),
		DroppedConns: s.dropped.Load(), LostInDrops: s.lostInDrops.Load(), RefusedDials: s.refused.Load(),
		ChurnOK: s.churnOK.Load(), ChurnSkipped: s.churnSkipped.Load(),
		StatsOK: s.statsOK.Load(), StatsV1: s.statsV1.Load(),
		LatencyP50: s.lat.quantile(0.50), LatencyP99: s.lat.quantile(0.99),
		LatencyP999: s.lat.quantile(0.999), LatencyMax: time.Duration(s.lat.max.Load()),
		MaxStall: time.Duration(s.maxStall.Load()),
		FinalOK:  s.finalOK.Load(), FinalFailed: s.finalFailed.Load(),
	}
	s.mu.Lock()
	r.Versions = maps.Clone(s.versions)
	// Appending to empty slices makes JSON say [] rather than null.
	r.Pids = slices.AppendSeq([]int{}, maps.Keys(s.pids))
	slices.Sort(r.Pids)
	r.Errors = append([]string{}, s.details...)
	s.mu.Unlock()
	r.ConnPidsMin, r.ConnPidsMax = pidSpread(conns)
	r.Pass = r.OK()
	return r
}

func pidSpread(conns []*conn) (lo, hi int) {
	for i, c := range conns {
		n := len(c.pids)
		if i == 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	return lo, hi
}

// String renders the report as aligned text, one fact per line.
func (r Report) String() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	line := func(k string, v any) { fmt.Fprintf(&b, "%-16s %v\n", k, v) }
	line("result", verdict)
	line("elapsed", r.Elapsed.Truncate(time.Millisecond))
	line("conns", r.Conns)
	line("requests_sent", r.Sent)
	line("replies_ok", r.RepliesOK)
	line("mismatches", r.Mismatches)
	line("unexpected", r.Unexpected)
	line("missing", r.Missing)
	line("stalled", r.Stalled)
	line("dropped_conns", fmt.Sprintf("%d (requests lost: %d)", r.DroppedConns, r.LostInDrops))
	line("refused_dials", r.RefusedDials)
	line("churn_ok", fmt.Sprintf("%d (skipped: %d)", r.ChurnOK, r.ChurnSkipped))
	line("pids", fmt.Sprintf("%d %v (per conn %d..%d)", len(r.Pids), r.Pids, r.ConnPidsMin, r.ConnPidsMax))
	line("versions", versionList(r.Versions))
	line("stats", fmt.Sprintf("ok=%d v1=%d", r.StatsOK, r.StatsV1))
	line("latency", fmt.Sprintf("p50=%v p99=%v p999=%v max=%v", r.LatencyP50, r.LatencyP99, r.LatencyP999, r.LatencyMax))
	line("max_stall", r.MaxStall)
	line("final_check", fmt.Sprintf("ok=%d failed=%d", r.FinalOK, r.FinalFailed))
	for _, e := range r.Errors {
		line("error", e)
	}
	return b.String()
}

func versionList(v map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(v)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v[k]))
	}
	return strings.Join(parts, " ")
}
