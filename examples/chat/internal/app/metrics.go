package app

import (
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

// observer is what -metrics serves: the upgrader's metrics, the messages
// received by kind (continued across upgrades), and the health checks.
type observer struct {
	up       *handoff.Upgrader
	reg      *prometheus.Registry
	messages *prometheus.CounterVec
	ln       net.Listener // nil without -metrics
}

func newObserver(up *handoff.Upgrader, addr string) (*observer, error) {
	o := &observer{up: up, reg: prometheus.NewRegistry()}
	o.messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_messages_total",
		Help: "Messages received from clients by the chain of chat processes, by endpoint (chat, echo).",
	}, []string{"kind"})
	for _, k := range []string{"chat", "echo"} {
		metrics.ContinueVec(up, "chat_messages_total", o.messages, k)
	}
	o.reg.MustRegister(metrics.NewCollector(up), o.messages, collectors.NewGoCollector(),
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

// count counts a message; before Setup made the observer, nothing is
// received.
func (o *observer) count(kind string) {
	if o != nil {
		o.messages.WithLabelValues(kind).Inc()
	}
}

func (o *observer) serve(log *slog.Logger) {
	if o.ln == nil {
		return
	}
	hs := &http.Server{Handler: metrics.Handler(o.up, o.reg), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(o.ln); err != nil && !errClosed(err) {
			log.Warn("metrics server ended", "err", err)
		}
	}()
}
