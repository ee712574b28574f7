// Package wire is the handoff protocol between an old process and the new
// one it starts (../../PROTOCOL.md), and nothing else: the frames, each a
// type that appends itself to a buffer and decodes itself from a payload
// (frames.go, records.go, decoder.go), the packet header (header.go), and
// the channel that carries them over a SOCK_SEQPACKET Unix socket, with
// fds as SCM_RIGHTS, the peer's credentials and the state stream
// (channel_linux.go, rights_linux.go, state_linux.go). The channel needs
// Linux; the frames build everywhere.
//
// Every decoder records the first shortfall and reports it as an error
// wrapping ErrProtocol: it never panics on bytes from the peer, and never
// allocates more than the bytes received back. FuzzFrames holds every
// frame type to that, and to encode→decode round trips.
//
// The package knows no session: which frame may come when, and what a
// frame's numbers must agree with (PLAN's count with the connections that
// arrive, READY's with FINAL), is the sessions' business, in package
// handoff. A session says which frame it waits for with Expect, and the
// channel refuses any other.
package wire
