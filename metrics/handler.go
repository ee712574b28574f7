package metrics

import (
	"net/http"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/handoff-dev/handoff/handoff"
)

// PIDHeader is the response header that names the process that answered:
// during an upgrade, two processes may answer on one address.
const PIDHeader = "Handoff-Pid"

// Handler serves /metrics from g (prometheus.DefaultGatherer if nil), and
// /alive and /ready for up, as the package documentation describes. Every
// response names the answering process in the PIDHeader header.
func Handler(up *handoff.Upgrader, g prometheus.Gatherer) http.Handler {
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/alive", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("alive\n"))
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		// One snapshot: the reason is the phase that made the answer.
		phase := up.Status().Phase
		if phase == handoff.ProcessServing {
			w.Write([]byte("ready\n"))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(phase + "\n"))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(PIDHeader, pid)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
}
