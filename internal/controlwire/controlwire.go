// Package controlwire declares the messages of the handoff control socket
// (handoff/CONTROL.md) once, for its server (package handoff) and its
// client (cmd/handoffctl). They are the wire's shapes only: a program of
// the library's users reads a process's status from handoff.Status and an
// upgrade's from handoff.UpgradeResult and handoff.Event, which these
// messages render.
package controlwire

import (
	"strings"
	"time"
)

// The request line's first two fields.
const (
	Magic   = "HANDOFF-CONTROL"
	Version = "1"
)

// The commands.
const (
	CommandStatus  = "status"
	CommandUpgrade = "upgrade"
)

// The answers' types, their "type" field.
const (
	TypeError  = "error"
	TypePhase  = "phase"
	TypeResult = "result"
	TypeStatus = "status"
)

// Request is one request line: a command and, for upgrade, its arguments.
type Request struct {
	Command string        // CommandStatus or CommandUpgrade
	Binary  string        // upgrade's binary=, an absolute path, or ""
	Timeout time.Duration // upgrade's timeout=, or 0
	App     string        // upgrade's app=, or ""
}

// Line is the request as the client sends it, without its newline.
func (r Request) Line() string {
	f := []string{Magic, Version, r.Command}
	if r.Binary != "" {
		f = append(f, "binary="+r.Binary)
	}
	if r.Timeout > 0 {
		f = append(f, "timeout="+r.Timeout.String())
	}
	if r.App != "" {
		f = append(f, "app="+r.App)
	}
	return strings.Join(f, " ")
}

// Error refuses a request.
type Error struct {
	Type  string `json:"type"` // TypeError
	Error string `json:"error"`
}

// Phase is one phase of an upgrade as it ends (handoff.Event).
type Phase struct {
	Type   string `json:"type"`  // TypePhase
	Phase  string `json:"phase"` // a handoff.Phase constant
	TookNS int64  `json:"took_ns"`
	PID    int    `json:"pid,omitempty"`
	Conns  int    `json:"conns,omitempty"`
	Bytes  uint64 `json:"bytes,omitempty"`
}

// Result is how an upgrade ended (handoff.UpgradeResult): the last line
// of an upgrade's answer, and a status's last upgrade.
type Result struct {
	Type       string           `json:"type"` // TypeResult
	Committed  bool             `json:"committed"`
	Refused    bool             `json:"refused"`
	Mode       string           `json:"mode,omitempty"`
	Cause      string           `json:"cause,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	From       int              `json:"from"`
	To         int              `json:"to,omitempty"`
	Binary     string           `json:"binary"`
	Began      time.Time        `json:"began"`
	TookNS     int64            `json:"took_ns"`
	Conns      int              `json:"conns"`
	StateBytes uint64           `json:"state_bytes"`
	PhasesNS   map[string]int64 `json:"phases_ns"` // by handoff.Phases name
}

// Totals are the chain's upgrades (handoff.Totals).
type Totals struct {
	Committed       uint64            `json:"committed"`
	RolledBack      map[string]uint64 `json:"rolled_back"`
	ConnsHandedOver uint64            `json:"conns_handed_over"`
}

// Status answers the status command (handoff.Status).
type Status struct {
	Type          string         `json:"type"` // TypeStatus
	PID           int            `json:"pid"`
	Version       string         `json:"version"`
	Phase         string         `json:"phase"` // the process's: handoff.Status.Phase
	Generation    uint64         `json:"generation"`
	ChainStart    time.Time      `json:"chain_start"`
	Start         time.Time      `json:"start"`
	ChainUptimeNS int64          `json:"chain_uptime_ns"`
	UptimeNS      int64          `json:"uptime_ns"`
	Conns         map[string]int `json:"conns"`
	Totals        Totals         `json:"totals"`
	Last          *Result        `json:"last"`
}
