package demo

import (
	"fmt"
	"strings"
	"time"
)

// Summary renders the result for a person: the steps, then one line per
// claim the demo makes, then the failed checks if any, and the verdict.
func (r Result) Summary() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("")
	for i, s := range r.Steps {
		p("upgrade %d: %s", i+1, s)
		if c := s.CountersLine(); c != "" {
			p("           %s", c)
		}
	}
	ld := r.Load
	p("connections: %d persistent, %d survived every upgrade (processes per connection %d..%d), dropped %d, stalled %d",
		ld.Conns, ld.FinalOK, ld.ConnPidsMin, ld.ConnPidsMax, ld.DroppedConns, ld.Stalled)
	p("requests: sent %d, answered exactly once in order %d, lost %d, duplicated %d, wrong %d",
		ld.Sent, ld.RepliesOK, ld.Missing+ld.LostInDrops, ld.Unexpected, ld.Mismatches)
	p("new connections: %d ok, refused %d", ld.ChurnOK, ld.RefusedDials)
	p("state: STATS after v1→v2 counted the 2 charges made under v1: %s", yesNo(r.StatsCarried()))
	p("latency: p50 %v, p99 %v, max %v", ms(ld.LatencyP50), ms(ld.LatencyP99), ms(ld.LatencyMax))
	r.writeFailures(&b)
	if r.OK() {
		p("PASS")
	} else {
		p("FAIL (work dir kept: %s)", r.Dir)
	}
	return b.String()
}

func (r Result) writeFailures(b *strings.Builder) {
	for _, c := range r.Checks() {
		if !c.Pass {
			fmt.Fprintf(b, "failed: %s\n", c.Name)
		}
	}
	for _, e := range r.Problems {
		fmt.Fprintf(b, "problem: %s\n", e)
	}
	for _, e := range r.Load.Errors {
		fmt.Fprintf(b, "load error: %s\n", e)
	}
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// ms rounds a duration for reading: whole milliseconds above 10 ms.
func ms(d time.Duration) time.Duration {
	if d >= 10*time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Microsecond)
}
