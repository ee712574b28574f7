package metrics_test

import (
	"context"
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/metrics"
)

// A server exports its upgrades and a counter of its own that continues
// across them, and answers health checks on an inherited listener.
func Example() {
	up, err := handoff.New(handoff.Options{Version: "v1.2.3"})
	if err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(up)) // before Ready
	served := prometheus.NewCounter(prometheus.CounterOpts{Name: "app_served_total", Help: "Requests served."})
	reg.MustRegister(served)
	metrics.Continue(up, "served", served) // before Ready, same name in every version

	ln, err := up.ListenPlain("tcp", "127.0.0.1:9100")
	if err != nil {
		log.Fatal(err)
	}
	if err := up.Ready(context.Background()); err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, metrics.Handler(up, reg))
	<-up.Exit()
}
