package app

import (
	"errors"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/examples/internal/plain"
	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
)

// runPlain serves srv on a plain listener through server.ServePlain,
// without the handoff library: the baseline against which make
// bench-steady measures the library's CPU per request. The requests are
// counted as listenMetrics counts them. SIGTERM and SIGINT close the
// listener and exit 0 (there is no -state to save); SIGHUP is ignored.
func runPlain(cfg config, version string, srv *server.Server, log *slog.Logger) int {
	ln, err := net.Listen("tcp", cfg.listen)
	if err == nil {
		err = plain.WritePID(cfg.pidfile)
	}
	if err != nil {
		log.Error("refusing to start", "err", err)
		return 1
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pdf_requests_total"}, []string{"command"})
	srv.CountRequests(func(cmd string) { requests.WithLabelValues(cmd).Inc() })
	plain.OnStop(func() { _ = ln.Close() })
	log.Info("serving", "version", version, "addr", ln.Addr().String(), "plain", true)
	if err := srv.ServePlain(ln); !errors.Is(err, net.ErrClosed) {
		log.Error("server failed", "err", err)
		return 1
	}
	return 0
}
