package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/handoff"
)

// Causes lists the rollback causes handoff_rollbacks_total reports, each
// from the start at 0 so that rate() sees a series before its first
// rollback. handoff.CauseRefused is not among them: a refused trigger
// starts no upgrade and rolls nothing back.
var Causes = []string{
	handoff.CauseStart, handoff.CauseExited, handoff.CauseTimeout, handoff.CausePauseTimeout, handoff.CauseParkTimeout,
	handoff.CauseRejected, handoff.CauseOtherApp, handoff.CauseProtocol, handoff.CauseStopped, handoff.CauseOther,
}

var (
	descUpgrades = prometheus.NewDesc("handoff_upgrades_total",
		"Upgrades of the process chain, by how they ended.", []string{"result"}, nil)
	descRollbacks = prometheus.NewDesc("handoff_rollbacks_total",
		"Rolled-back upgrades of the process chain, by cause.", []string{"cause"}, nil)
	descPhase = prometheus.NewDesc("handoff_upgrade_phase_seconds",
		"Duration of each phase of the chain's committed upgrades.", []string{"phase"}, nil)
	descConns = prometheus.NewDesc("handoff_connections_handed_over_total",
		"Connections the process chain has handed from an old process to a new one.", nil, nil)
	descStateBytes = prometheus.NewDesc("handoff_state_bytes",
		"Bytes of global state this process's last upgrade sent.", nil, nil)
	descGeneration = prometheus.NewDesc("handoff_generation",
		"Upgrades the chain committed before this process served.", nil, nil)
	descInfo = prometheus.NewDesc("handoff_info",
		"The running version, as a label; always 1.", []string{"version"}, nil)
	descServing = prometheus.NewDesc("handoff_serving",
		"1 if this process should get traffic (handoff.Upgrader.Serving), else 0.", nil, nil)
)

// Collector is a prometheus.Collector for one handoff.Upgrader. Its
// counters are the chain's: they continue across upgrades.
type Collector struct {
	up *handoff.Upgrader

	mu       sync.Mutex
	phases   map[string]*histogram
	observed time.Time // Began of the last committed upgrade observed from Status().Last
	tookOver bool      // Status().TakenOver is observed
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns the collector of up. Call it before up.Ready, and
// in every version of the application: it registers the Carry callbacks
// through which the phase histogram continues, and a process started by an
// upgrade restores carried values during Ready. Create one per Upgrader.
func NewCollector(up *handoff.Upgrader) *Collector {
	c := &Collector{up: up, phases: map[string]*histogram{}}
	for _, phase := range Phases {
		h := newHistogram()
		c.phases[phase] = h
		for name, v := range h.values(phase) {
			up.Carry(name, func() float64 {
				c.mu.Lock()
				defer c.mu.Unlock()
				return *v
			}, func(x float64) {
				c.mu.Lock()
				defer c.mu.Unlock()
				*v += x
			})
		}
	}
	return c
}

// observe adds the phases of the upgrades Status reports that the
// histogram does not hold yet: the one that started this process (the
// carried histogram was read before it committed), and this process's
// own last one, for the scrapes it answers before it exits.
func (c *Collector) observe(st handoff.Status) {
	if t := st.TakenOver; t != nil && !c.tookOver {
		c.tookOver = true
		c.add(t.Stats)
	}
	if l := st.Last; l != nil && l.Committed && !l.Began.Equal(c.observed) {
		c.observed = l.Began
		c.add(l.Stats)
	}
}

func (c *Collector) add(st handoff.UpgradeStats) {
	for _, phase := range Phases {
		c.phases[phase].observe(st.Took(phase).Seconds())
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUpgrades, descRollbacks, descPhase, descConns,
		descStateBytes, descGeneration, descInfo, descServing} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.up.Status()
	serving := 0.0
	if st.Phase == handoff.ProcessServing {
		serving = 1
	}
	for _, m := range statusMetrics(st, serving) {
		ch <- m
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observe(st)
	for _, phase := range Phases {
		h := c.phases[phase]
		ch <- prometheus.MustNewConstHistogram(descPhase, uint64(h.count), h.sum, h.buckets(), phase)
	}
}

// statusMetrics are the metrics read from a Status alone.
func statusMetrics(st handoff.Status, serving float64) []prometheus.Metric {
	var rolledBack uint64
	for _, n := range st.Totals.RolledBack {
		rolledBack += n
	}
	ms := []prometheus.Metric{
		prometheus.MustNewConstMetric(descUpgrades, prometheus.CounterValue, float64(st.Totals.Committed), handoff.PhaseCommitted),
		prometheus.MustNewConstMetric(descUpgrades, prometheus.CounterValue, float64(rolledBack), handoff.PhaseRolledBack),
		prometheus.MustNewConstMetric(descConns, prometheus.CounterValue, float64(st.Totals.ConnsHandedOver)),
		prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(st.Generation)),
		prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, st.Version),
		prometheus.MustNewConstMetric(descServing, prometheus.GaugeValue, serving),
	}
	if st.Last != nil {
		ms = append(ms, prometheus.MustNewConstMetric(descStateBytes, prometheus.GaugeValue, float64(st.Last.StateBytes)))
	}
	causes := map[string]bool{}
	for _, cause := range Causes {
		causes[cause] = true
		ms = append(ms, prometheus.MustNewConstMetric(descRollbacks, prometheus.CounterValue,
			float64(st.Totals.RolledBack[cause]), cause))
	}
	for cause, n := range st.Totals.RolledBack {
		if !causes[cause] { // a cause a newer library added
			ms = append(ms, prometheus.MustNewConstMetric(descRollbacks, prometheus.CounterValue, float64(n), cause))
		}
	}
	return ms
}
