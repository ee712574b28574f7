//go:build !linux

package httphandoff

import "net"

// pending cannot tell elsewhere: a connection whose carried deadline
// passed while it moved is closed at its first Read, as it would have
// been had it not moved.
func pending(nc net.Conn) bool { return false }
