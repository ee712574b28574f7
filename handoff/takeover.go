package handoff

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
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

// The environment variables TakeoverFromEnv reads: one place
// (kubernetes/takeover.yaml, a ConfigMap) sets them for every container
// of a pod, where flags could not take their values on every runtime.
const (
	EnvTakeoverSocket    = "HANDOFF_TAKEOVER_SOCKET"     // Options.TakeoverSocket
	EnvTakeoverTokenFile = "HANDOFF_TAKEOVER_TOKEN_FILE" // Options.TakeoverTokenFile
	EnvTakeoverTimeout   = "HANDOFF_TAKEOVER_TIMEOUT"    // Options.UpgradeTimeout, a time.ParseDuration string
	// EnvTakeoverUID is the uid both containers must run as: a process
	// of another uid fails here, at its start, rather than at its first
	// takeover.
	EnvTakeoverUID = "HANDOFF_TAKEOVER_UID"
)

// TakeoverFromEnv sets opts' takeover fields from the environment
// variables Env*: those unset or empty leave opts as they are.
func TakeoverFromEnv(opts *Options) error {
	if v := os.Getenv(EnvTakeoverSocket); v != "" {
		opts.TakeoverSocket = v
	}
	if v := os.Getenv(EnvTakeoverTokenFile); v != "" {
		opts.TakeoverTokenFile = v
	}
	if v := os.Getenv(EnvTakeoverTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("handoff: %s=%q: not a positive duration", EnvTakeoverTimeout, v)
		}
		opts.UpgradeTimeout = d
	}
	if v := os.Getenv(EnvTakeoverUID); v != "" {
		uid, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("handoff: %s=%q: not a uid", EnvTakeoverUID, v)
		}
		if uid != os.Getuid() {
			return fmt.Errorf("handoff: %s says uid %d, this process runs as uid %d: a peer of another uid is never let in",
				EnvTakeoverUID, uid, os.Getuid())
		}
	}
	return nil
}
