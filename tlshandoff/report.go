package tlshandoff

import (
	"github.com/handoff-dev/handoff/handoff"
)

// reportUpgrades logs, at each upgrade of up, how many of this Server's
// connections move to the new process and how many stay here to drain
// (those that cannot move, and those Options.Stay keeps): an upgrade
// never leaves TLS connections behind silently. Carry's read is the
// hook: it runs in the old process at every upgrade, once the
// connections that move all at once are parked. The value carried is
// the count that moves; the new process logs what it was told.
func (s *Server) reportUpgrades(up *handoff.Upgrader) {
	up.Carry("tlshandoff."+s.opts.Kind+".moving", func() float64 {
		tracked := 0
		for _, c := range up.Conns() {
			if c.Kind() == s.opts.Kind {
				tracked++
			}
		}
		move, stay := tracked, s.Stats().OpenUnmovable
		if up.Mode() == handoff.ListenersOnly { // the tracked ones stay too
			move, stay = 0, stay+tracked
		}
		s.opts.Logger.Info("tlshandoff: upgrade: TLS connections that move to the new process, and that stay here to drain",
			"kind", s.opts.Kind, "move", move, "stay", stay)
		return float64(move)
	}, func(n float64) {
		s.opts.Logger.Info("tlshandoff: taking over TLS connections from the old process", "kind", s.opts.Kind, "conns", int(n))
	})
}
