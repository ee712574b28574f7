package handoff

import (
	"net"
)

// The takeover socket (Options.TakeoverSocket) lets a process this one
// did not start take over: takeover_linux.go is the side that joins, in
// New; takeover_server.go the side that serves and lets it in.

// joined is what New found on the takeover socket: a peer's inheritance
// (in), or, in a first process, the socket's new listener (ln).
type joined struct {
	in *inheritance
	ln net.Listener
}

// peerConn is a process admitted through the takeover socket: its
// connection, which becomes the handoff channel, and its pid as the
// kernel says it (0 from another PID namespace, as in another container).
type peerConn struct {
	conn *net.UnixConn
	pid  int
}

// takeoverKey names the takeover socket's listener among those handed on.
func takeoverKey(path string) string { return listenerKey("unixpacket", path) }
