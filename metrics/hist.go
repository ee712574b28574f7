package metrics

import (
	"fmt"

	"github.com/handoff-dev/handoff/handoff"
)

// Phases names the phases of a committed upgrade that
// handoff_upgrade_phase_seconds observes, as its phase label says them:
// the library's names (handoff.Phases), release and move left out.
var Phases = []string{handoff.PhaseConnected, handoff.PhaseFds, handoff.PhasePark, handoff.PhaseParked,
	handoff.PhaseState, handoff.PhaseReady, handoff.PhaseCommit, handoff.PhasePause}

// Buckets are the upper bounds of handoff_upgrade_phase_seconds, from
// 100µs to about 26s. They travel by index across upgrades: a version that
// changes them must not reuse the Carry names (see carryName).
var Buckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25,
}

// histogram is a Prometheus histogram whose counts can be read and added
// to, which client_golang's cannot: that is what carrying it takes.
// Its owner (Collector) guards it.
type histogram struct {
	counts []float64 // cumulative, by Buckets index
	sum    float64
	count  float64
}

func newHistogram() *histogram { return &histogram{counts: make([]float64, len(Buckets))} }

func (h *histogram) observe(v float64) {
	for i, le := range Buckets {
		if v <= le {
			h.counts[i]++
		}
	}
	h.sum += v
	h.count++
}

// buckets returns the cumulative counts as prometheus.MustNewConstHistogram
// takes them.
func (h *histogram) buckets() map[float64]uint64 {
	m := make(map[float64]uint64, len(Buckets))
	for i, le := range Buckets {
		m[le] = uint64(h.counts[i])
	}
	return m
}

// values lists every number of the histogram with its Carry name, and a
// pointer to it for the restore.
func (h *histogram) values(phase string) map[string]*float64 {
	m := make(map[string]*float64, len(h.counts)+2)
	for i := range h.counts {
		m[carryName(phase, fmt.Sprintf("bucket.%d", i))] = &h.counts[i]
	}
	m[carryName(phase, "sum")] = &h.sum
	m[carryName(phase, "count")] = &h.count
	return m
}

// carryName is the Carry name of one number of a phase's histogram.
func carryName(phase, what string) string { return "metrics.phase." + phase + "." + what }
