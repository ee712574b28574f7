//go:build !linux

package handoff

import (
	"fmt"
	"net"
)

// The control socket checks its peers with SO_PEERCRED, which only Linux
// has here: New refuses Options.ControlSocket elsewhere.

func listenControl(string, bool, func(network, addr string) (net.Listener, error)) (net.Listener, error) {
	return nil, fmt.Errorf("the control socket needs SO_PEERCRED: %w", ErrNotSupported)
}

func checkControlPeer(c net.Conn) error { return ErrNotSupported }
