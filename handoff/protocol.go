package handoff

import "github.com/handoff-dev/handoff/handoff/internal/wire"

// ProtocolVersion is the version of the handoff wire protocol (PROTOCOL.md).
// Both ends must speak the same one.
const ProtocolVersion = wire.Version

// protocolVersion is what this process says in HELLO; a variable so that
// tests can play a peer of another version.
var protocolVersion uint16 = ProtocolVersion

// ErrProtocol is wrapped by every error about a malformed or unexpected frame
// from the peer.
var ErrProtocol = wire.ErrProtocol

// protoErr is an error of the peer's breaking the protocol, for the
// sessions' checks of what frames say against each other.
var protoErr = wire.Errorf
