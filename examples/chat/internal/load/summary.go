package load

import (
	"fmt"
	"strings"
	"time"
)

// Clean reports whether no client reconnected, missed, or got a message
// out of order or twice, every send came back, every echo count was
// right, and every upgrade ended.
func (r Report) Clean() bool {
	for _, u := range r.Upgrades {
		if u.Err != "" {
			return false
		}
	}
	return r.Reconnects == 0 && r.Missed == 0 && r.Reordered == 0 && r.Duplicates == 0 && r.Unechoed == 0 && r.Resets == 0 &&
		r.EchoBad == 0 && r.EchoOK == r.EchoSent && r.Delivered == r.Sent
}

// ReconnectsPerUpgrade is the reconnects divided by the upgrades.
func (r Report) ReconnectsPerUpgrade() float64 {
	if len(r.Upgrades) == 0 {
		return 0
	}
	return float64(r.Reconnects) / float64(len(r.Upgrades))
}

// Summary is the report in a few lines.
func (r Report) Summary() string {
	var b strings.Builder
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Fprintf(&b, "clients %d chat + %d echo; upgrades %d\n", r.Clients, r.Echo, len(r.Upgrades))
	for i, u := range r.Upgrades {
		fmt.Fprintf(&b, "  upgrade %d: pid %d -> %d, took %s, reconnects %d %s\n", i+1, u.From, u.To, ms(u.Took), u.Reconnects, u.Err)
	}
	fmt.Fprintf(&b, "reconnects %d (%.1f per upgrade), dial failures %d, sends due while disconnected %d\n",
		r.Reconnects, r.ReconnectsPerUpgrade(), r.DialFails, r.Unsent)
	fmt.Fprintf(&b, "chat: sent %d, back to sender %d, never back %d; received %d, missed %d, reordered %d, duplicates %d, renumbered rooms %d\n",
		r.Sent, r.Delivered, r.Unechoed, r.Received, r.Missed, r.Reordered, r.Duplicates, r.Resets)
	fmt.Fprintf(&b, "echo: sent %d, right count %d, wrong count %d\n", r.EchoSent, r.EchoOK, r.EchoBad)
	fmt.Fprintf(&b, "delivery to every member: p50 %s p99 %s p99.9 %s max (longest delivery gap) %s; longest silence %s\n",
		ms(r.LatencyP50), ms(r.LatencyP99), ms(r.LatencyP999), ms(r.LatencyMax), ms(r.LongestSilence))
	fmt.Fprintf(&b, "clean %v\n", r.Clean())
	return b.String()
}
