package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/metrics"
)

// commands are the pdf_requests_total label values: every command, and
// INVALID for a line that does not parse. Each continues across upgrades.
var commands = []string{"HELLO", "TOPUP", "CHARGE", "BALANCE", "WHOAMI", "VERSION", "STATS", "INVALID"}

// observer is what -metrics serves: the upgrader's metrics, the server's
// request counts, and the health checks.
type observer struct {
	up  *handoff.Upgrader
	reg *prometheus.Registry
	ln  net.Listener // from ListenPlain; nil without -metrics
}

// newObserver counts srv's requests and, with addr set, listens on it
// (inherited across upgrades). Call it before up.Ready: the counters
// continue through Carry callbacks.
func newObserver(up *handoff.Upgrader, addr string, srv *server.Server) (*observer, error) {
	o := &observer{up: up, reg: prometheus.NewRegistry()}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pdf_requests_total",
		Help: "Requests answered by the chain of pdf processes, by command.",
	}, []string{"command"})
	for _, cmd := range commands {
		metrics.ContinueVec(up, "pdf_requests_total", requests, cmd)
	}
	srv.CountRequests(func(cmd string) { requests.WithLabelValues(cmd).Inc() })
	o.reg.MustRegister(metrics.NewCollector(up), requests, collectors.NewGoCollector(),
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

// serve answers /metrics, /alive and /ready, from Ready on: before it, a
// new process would share the listener with the old one. The server ends
// when the upgrader closes the listener at a handover.
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
