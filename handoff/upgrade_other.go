//go:build !linux

package handoff

import (
	"context"
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
