// Package tlsmetrics exports a tlshandoff.Server's counts to Prometheus:
// how many TLS connections could move at upgrades and how many stayed to
// drain (tlshandoff's docs say which cannot move). A package of its own,
// so that package metrics does not bring TLS into servers without it.
//
//	col := tlsmetrics.NewCollector(up, tlsServer) // before up.Ready
//	reg.MustRegister(col)
//
// Metrics:
//
//	handoff_tls_handshakes_total{moves="yes"|"no"}  counter, the chain's: connections that can move or not
//	handoff_tls_drained_total                       counter, the chain's: connections left to drain at upgrades
//	handoff_tls_unmovable_connections               gauge, this process's open ones that cannot move
package tlsmetrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

var (
	descTLSHandshakes = prometheus.NewDesc("handoff_tls_handshakes_total",
		"TLS handshakes of the process chain, by whether the connection can move at an upgrade.", []string{"moves"}, nil)
	descTLSDrained = prometheus.NewDesc("handoff_tls_drained_total",
		"TLS connections that could not move and stayed to drain in the old process, summed over the chain's upgrades.", nil, nil)
	descTLSUnmovable = prometheus.NewDesc("handoff_tls_unmovable_connections",
		"Open TLS connections of this process that cannot move: at an upgrade they stay here and drain.", nil, nil)
)

// Collector is a prometheus.Collector for a tlshandoff.Server: how
// many connections could move at upgrades and how many stayed to drain
// (tlshandoff's docs say which ones cannot move). Its counters are the
// chain's, as metrics.Collector's are.
type Collector struct {
	s  *tlshandoff.Server
	up *handoff.Upgrader

	mu sync.Mutex
	// What the old processes counted, carried: handshakes by whether
	// they moved, and the connections they left to drain at their
	// upgrades (each one's unmovable connections when it handed over).
	movable, unmovable, drained float64
	// offered is what this process's last upgrade left to drain, read as
	// it was carried: counted here too once this process has handed over.
	offered float64
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns the collector of s, whose connections up hands
// over. Call it before up.Ready, as metrics.NewCollector: its counters
// continue through up.Carry.
func NewCollector(up *handoff.Upgrader, s *tlshandoff.Server) *Collector {
	c := &Collector{s: s, up: up}
	c.carry(up, "tls.handshakes.movable", &c.movable, func(st tlshandoff.Stats) uint64 { return st.Movable })
	c.carry(up, "tls.handshakes.unmovable", &c.unmovable, func(st tlshandoff.Stats) uint64 { return st.Unmovable })
	// Read with every movable connection parked: the unmovable ones open
	// now are the ones this upgrade leaves to drain, if it commits.
	c.carry(up, "tls.drained", &c.drained, func(st tlshandoff.Stats) uint64 {
		c.offered = float64(st.OpenUnmovable)
		return uint64(st.OpenUnmovable)
	})
	return c
}

// carry makes *total continue across upgrades: the new process gets the
// old one's *total plus what own counts in the old process.
func (c *Collector) carry(up *handoff.Upgrader, name string, total *float64, own func(tlshandoff.Stats) uint64) {
	up.Carry(name, func() float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return *total + float64(own(c.s.Stats()))
	}, func(v float64) {
		c.mu.Lock()
		defer c.mu.Unlock()
		*total += v
	})
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTLSHandshakes, descTLSDrained, descTLSUnmovable} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	handed := c.up.Status().Phase == handoff.ProcessHandedOver
	c.mu.Lock()
	movable, unmovable, drained := c.movable, c.unmovable, c.drainedSeen(handed)
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descTLSHandshakes, prometheus.CounterValue, movable+float64(st.Movable), "yes")
	ch <- prometheus.MustNewConstMetric(descTLSHandshakes, prometheus.CounterValue, unmovable+float64(st.Unmovable), "no")
	ch <- prometheus.MustNewConstMetric(descTLSDrained, prometheus.CounterValue, drained)
	ch <- prometheus.MustNewConstMetric(descTLSUnmovable, prometheus.GaugeValue, float64(st.OpenUnmovable))
}

// drainedSeen is the drained total as this process reports it: after it
// has handed over, with the connections it kept to drain.
func (c *Collector) drainedSeen(handedOver bool) float64 {
	if handedOver {
		return c.drained + c.offered
	}
	return c.drained
}
