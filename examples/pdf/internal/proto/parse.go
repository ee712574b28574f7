package proto

import (
	"strconv"
	"strings"
)

// Kind is the command of a request.
type Kind int

// The commands. Stats exists only for servers that keep charge counts.
const (
	Hello Kind = iota + 1
	TopUp
	Charge
	Balance
	WhoAmI
	Version
	Stats
)

// Amount bounds, in cents.
const (
	MinAmount = 1
	MaxAmount = 1_000_000_000_000
)

// Reasons given in ERR replies.
const (
	ReasonUnknown   = "unknown-command"
	ReasonBadArgs   = "bad-args"
	ReasonBadAmount = "bad-amount"
	ReasonEmpty     = "empty-line"
	ReasonOverflow  = "overflow"
	ReasonTooLong   = "too-long"
)

// Request is a parsed request line.
type Request struct {
	Kind   Kind
	RID    string // "-" for HELLO, which has none
	GW     string // HELLO only
	Acct   string // TOPUP, CHARGE, BALANCE, STATS
	Amount int64  // TOPUP, CHARGE
}

// command says how many arguments a command takes after its name, and
// whether the last one is an amount.
type command struct {
	kind   Kind
	args   int
	amount bool
}

var commands = map[string]command{
	"HELLO":   {Hello, 1, false},
	"TOPUP":   {TopUp, 3, true},
	"CHARGE":  {Charge, 3, true},
	"BALANCE": {Balance, 2, false},
	"WHOAMI":  {WhoAmI, 1, false},
	"VERSION": {Version, 1, false},
	"STATS":   {Stats, 2, false},
}

// Parse parses one request line, without its terminator. withStats says
// whether STATS is a command; a v1 server answers it as unknown.
//
// On success reason is empty. Otherwise reason is the ERR reason and
// req.RID is the rid to echo: the second token, or "-" if there is none.
func Parse(line []byte, withStats bool) (req Request, reason string) {
	f := strings.Fields(string(line))
	req.RID = "-"
	if len(f) == 0 {
		return req, ReasonEmpty
	}
	if len(f) > 1 {
		req.RID = f[1]
	}
	cmd, ok := commands[f[0]]
	if !ok || (cmd.kind == Stats && !withStats) {
		return req, ReasonUnknown
	}
	if len(f)-1 != cmd.args {
		return req, ReasonBadArgs
	}
	req.Kind = cmd.kind
	if cmd.kind == Hello {
		req.RID, req.GW = "-", f[1]
		return req, ""
	}
	if cmd.args >= 2 {
		req.Acct = f[2]
	}
	if cmd.amount {
		amt, ok := parseAmount(f[3])
		if !ok {
			return req, ReasonBadAmount
		}
		req.Amount = amt
	}
	return req, ""
}

// parseAmount accepts plain decimal digits within [MinAmount, MaxAmount]:
// no sign, no spaces, no exponent.
func parseAmount(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < MinAmount || n > MaxAmount {
		return 0, false
	}
	return n, true
}

// String returns the command's name as a request spells it, or "UNKNOWN".
func (k Kind) String() string {
	for name, c := range commands {
		if c.kind == k {
			return name
		}
	}
	return "UNKNOWN"
}
