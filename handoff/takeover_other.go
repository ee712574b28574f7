//go:build !linux

package handoff

import (
	"fmt"
	"log/slog"
	"net"
)

// The takeover socket checks its peers with SO_PEERCRED and carries
// SOCK_SEQPACKET, which only Linux has here: New refuses
// Options.TakeoverSocket elsewhere.

type takeoverServer struct{}

func (*takeoverServer) open()  {}
func (*takeoverServer) close() {}

func joinTakeover(*Options, *env, *slog.Logger) (joined, error) {
	return joined{}, fmt.Errorf("handoff: the takeover socket needs SO_PEERCRED: %w", ErrNotSupported)
}

func listenFresh(string, *env) (net.Listener, error) { return nil, ErrNotSupported }

func serveTakeover(controlled, *slog.Logger, net.Listener, string) *takeoverServer { return nil }
