//go:build !linux

package handoff

import (
	"context"
	"fmt"
	"log/slog"
	"net"
)

// Upgrades need Linux (SOCK_SEQPACKET, SO_PEERCRED, process groups). On
// other systems an Upgrader serves as a first process always does:
// Listen, Wrap, Ready, Conns and Stop work, and Upgrade returns
// ErrNotSupported, so that a server builds and runs where its developers
// work.

func (u *core) upgrade(ctx context.Context, run *attempt, req UpgradeRequest, res *UpgradeResult) error {
	return ErrNotSupported
}

// takeOver is never reached: no process here is started by an upgrade.
func (u *core) takeOver(ctx context.Context) error { return ErrNotSupported }

// The takeover socket checks its peers with SO_PEERCRED and carries
// SOCK_SEQPACKET, which only Linux has here: New refuses
// Options.TakeoverSocket elsewhere.

func joinTakeover(*Options, *env, *slog.Logger) (joined, error) {
	return joined{}, fmt.Errorf("handoff: the takeover socket needs SO_PEERCRED: %w", ErrNotSupported)
}

func listenFresh(string, *env) (net.Listener, error) { return nil, ErrNotSupported }

// serveTakeover is never reached: joinTakeover failed New.
func serveTakeover(any, *slog.Logger, net.Listener, string) acceptor { return nil }
