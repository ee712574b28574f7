// Package observe is what each example's -metrics flag serves: the
// upgrader's metrics (package metrics), the Go runtime's and the
// process's, the example's own counters, and the /alive and /ready
// checks, on a listener that upgrades hand over like any other.
package observe

import (
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
)

// Server is the -metrics endpoint of one process.
type Server struct {
	// Registry holds what /metrics exports; register more on it before
	// Serve.
	Registry *prometheus.Registry
	up       *handoff.Upgrader
	ln       net.Listener // from ListenPlain; nil without an address
}

// Listen makes the registry with the upgrader's collector, Go's and the
// process's, and more, and with addr set listens there (inherited across
// upgrades). Call it before up.Ready, as the counters that continue
// across upgrades (metrics.Continue) must be.
func Listen(up *handoff.Upgrader, addr string, more ...prometheus.Collector) (*Server, error) {
	s := &Server{Registry: prometheus.NewRegistry(), up: up}
	s.Registry.MustRegister(metrics.NewCollector(up), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.Registry.MustRegister(more...)
	if addr == "" {
		return s, nil
	}
	ln, err := up.ListenPlain("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics: %w", err)
	}
	s.ln = ln
	return s, nil
}

// Serve answers /metrics, /alive and /ready on a goroutine of its own;
// nothing without an address. Call it after Ready: before, a new process
// would share the listener with the old one. The server ends when the
// upgrader closes the listener at a handover.
func (s *Server) Serve(log *slog.Logger) {
	if s.ln == nil {
		return
	}
	hs := &http.Server{Handler: metrics.Handler(s.up, s.Registry), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(s.ln); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Warn("metrics server ended", "err", err)
		}
	}()
}
