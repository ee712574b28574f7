package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/handoff-dev/handoff/handoff"
)

// Continue makes the application's counter c continue across upgrades: a
// process started by an upgrade adds the old process's value to c before
// it serves anything, so that rate() and increase() see no reset. Call it
// before up.Ready, with the same name in every version; a name the new
// version does not continue is dropped, and a new name starts from 0. The
// counter's value is read in the old process with every connection parked.
func Continue(up *handoff.Upgrader, name string, c prometheus.Counter) {
	up.Carry("counter."+name, func() float64 { return counterValue(c) }, c.Add)
}

// ContinueVec is Continue for the child of vec with labelValues, one call
// per label set. A label set the old process never used carries 0.
func ContinueVec(up *handoff.Upgrader, name string, vec *prometheus.CounterVec, labelValues ...string) {
	Continue(up, name+"{"+strings.Join(labelValues, ",")+"}", vec.WithLabelValues(labelValues...))
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
