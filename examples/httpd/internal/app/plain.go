package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"

	"github.com/handoff-dev/handoff/examples/internal/plain"
)

// runPlain serves the handlers of newHandler on hs, a plain net/http
// server on a plain listener, without the handoff library at all: the
// baseline against which make bench-steady measures what the library
// costs between upgrades. Everything a request meets but the library is
// the same as in the other modes: the http.Server's settings, the
// handlers, the request counter. SIGTERM and SIGINT stop it as they stop
// the others (Shutdown for at most -drain-timeout); SIGHUP is ignored.
func runPlain(cfg config, hs *http.Server, log *slog.Logger) int {
	ln, err := net.Listen("tcp", cfg.listen)
	if err == nil {
		err = plain.WritePID(cfg.pidfile)
	}
	if err != nil {
		log.Error("refusing to start", "err", err)
		return 1
	}
	requests := newRequests()
	hs.Handler = newHandler(cfg.version, func(route string) { countIn(requests, route) })
	stopped := make(chan struct{})
	plain.OnStop(func() {
		defer close(stopped)
		ctx, cancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
		defer cancel()
		if hs.Shutdown(ctx) != nil {
			_ = hs.Close()
		}
	})
	log.Info("serving", "version", cfg.version, "addr", ln.Addr().String(), "plain", true)
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		log.Error("server failed", "err", err)
		return 1
	}
	<-stopped
	return 0
}
