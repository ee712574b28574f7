package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/examples/internal/observe"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/metrics"
)

// observer is what -metrics serves (package observe) with the messages
// received by kind, continued across upgrades.
type observer struct {
	*observe.Server
	messages *prometheus.CounterVec
}

func newObserver(up *handoff.Upgrader, addr string) (*observer, error) {
	messages := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_messages_total",
		Help: "Messages received from clients by the chain of chat processes, by endpoint (chat, echo).",
	}, []string{"kind"})
	for _, k := range []string{"chat", "echo"} {
		metrics.ContinueVec(up, "chat_messages_total", messages, k)
	}
	s, err := observe.Listen(up, addr, messages)
	if err != nil {
		return nil, err
	}
	return &observer{Server: s, messages: messages}, nil
}

// count counts a message; before Setup made the observer, nothing is
// received.
func (o *observer) count(kind string) {
	if o != nil {
		o.messages.WithLabelValues(kind).Inc()
	}
}
