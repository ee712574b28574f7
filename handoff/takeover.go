package handoff

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
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

// greetTimeout bounds one try's exchange of TAKEOVER, HELLO and
// LISTENERS: a serving process answers at once or says BUSY.
const greetTimeout = 5 * time.Second

// readToken reads the takeover token; none without a file.
func readToken(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("takeover token: %w", err)
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) > wire.MaxToken {
		return nil, fmt.Errorf("takeover token %s: %d bytes, at most %d", path, len(b), wire.MaxToken)
	}
	return b, nil
}
