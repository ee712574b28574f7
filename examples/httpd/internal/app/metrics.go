package app

import (
	"crypto/tls"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/examples/internal/observe"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/metrics"
	"github.com/handoff-dev/handoff/metrics/tlsmetrics"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// observer is what -metrics serves (package observe) with the requests
// answered by route, continued across upgrades.
type observer struct {
	*observe.Server
	up       *handoff.Upgrader
	requests *prometheus.CounterVec
}

// newObserver makes the counters and, with addr set, listens on it
// (inherited across upgrades). Call it before up.Ready: the counters
// continue through Carry callbacks.
func newObserver(up *handoff.Upgrader, addr string) (*observer, error) {
	requests := newRequests()
	for _, r := range routes {
		metrics.ContinueVec(up, "httpd_requests_total", requests, r)
	}
	s, err := observe.Listen(up, addr, requests)
	if err != nil {
		return nil, err
	}
	return &observer{Server: s, up: up, requests: requests}, nil
}

// newRequests is the counter of requests by route, which newHandler's
// count increments in either mode.
func newRequests() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "httpd_requests_total",
		Help: "Requests answered by the chain of httpd processes, by route.",
	}, []string{"route"})
}

// countHandshakes exports the chain's TLS handshakes, so that one can tell
// how many clients came back with a new one after upgrades: the TLS
// layer's handoff_tls_handshakes_total when connections move with it (ts
// set), else httpd_tls_handshakes_total, counted by crypto/tls's
// VerifyConnection on tcfg (listeners mode; tcfg must not serve yet). Call
// it before up.Ready, as newObserver.
func (o *observer) countHandshakes(ts *tlshandoff.Server, tcfg *tls.Config) {
	if ts != nil {
		o.Registry.MustRegister(tlsmetrics.NewCollector(o.up, ts))
		return
	}
	if tcfg == nil {
		return
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "httpd_tls_handshakes_total",
		Help: "TLS handshakes completed by the chain of httpd processes (listeners mode: crypto/tls).",
	})
	metrics.Continue(o.up, "httpd_tls_handshakes_total", c)
	o.Registry.MustRegister(c)
	tcfg.VerifyConnection = func(tls.ConnectionState) error { c.Inc(); return nil }
}

// count is newHandler's counting function.
func (o *observer) count(route string) { countIn(o.requests, route) }

// countIn counts a request of route in requests: the same work per
// request with the library or without (-plain).
func countIn(requests *prometheus.CounterVec, route string) { requests.WithLabelValues(route).Inc() }
