package app

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/metrics"
	"github.com/handoff-dev/handoff/metrics/tlsmetrics"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// observer is what -metrics serves: the upgrader's metrics, the requests
// answered by route, and the health checks.
type observer struct {
	up       *handoff.Upgrader
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	ln       net.Listener // from ListenPlain; nil without -metrics
}

// newObserver makes the counters and, with addr set, listens on it
// (inherited across upgrades). Call it before up.Ready: the counters
// continue through Carry callbacks.
func newObserver(up *handoff.Upgrader, addr string) (*observer, error) {
	o := &observer{up: up, reg: prometheus.NewRegistry()}
	o.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "httpd_requests_total",
		Help: "Requests answered by the chain of httpd processes, by route.",
	}, []string{"route"})
	for _, r := range routes {
		metrics.ContinueVec(up, "httpd_requests_total", o.requests, r)
	}
	o.reg.MustRegister(metrics.NewCollector(up), o.requests, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if addr == "" {
		return o, nil
	}
	ln, err := up.ListenPlain("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics: %w", err)
	}
	o.ln = ln
	return o, nil
}

// countHandshakes exports the chain's TLS handshakes, so that one can tell
// how many clients came back with a new one after upgrades: the TLS
// layer's handoff_tls_handshakes_total when connections move with it (ts
// set), else httpd_tls_handshakes_total, counted by crypto/tls's
// VerifyConnection on tcfg (listeners mode; tcfg must not serve yet). Call
// it before up.Ready, as newObserver.
func (o *observer) countHandshakes(ts *tlshandoff.Server, tcfg *tls.Config) {
	if ts != nil {
		o.reg.MustRegister(tlsmetrics.NewCollector(o.up, ts))
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
	o.reg.MustRegister(c)
	tcfg.VerifyConnection = func(tls.ConnectionState) error { c.Inc(); return nil }
}

// count is newHandler's counting function.
func (o *observer) count(route string) { o.requests.WithLabelValues(route).Inc() }

// serve answers /metrics, /alive and /ready, from Ready on. The server
// ends when the upgrader closes the listener at a handover.
func (o *observer) serve(log *slog.Logger) {
	if o.ln == nil {
		return
	}
	hs := &http.Server{Handler: metrics.Handler(o.up, o.reg), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(o.ln); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Warn("metrics server ended", "err", err)
		}
	}()
}
