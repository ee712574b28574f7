// Package proto is the wire protocol of the PDF charging server: how a request
// line is split off the stream, parsed, and how replies are written.
//
// One request per line, terminated by "\n" (a trailing "\r" is dropped), and
// one reply line per request, in order. The package is pure: it knows nothing
// of connections or of the ledger, so every rule is tested here.
//
//	HELLO <gw>                       WELCOME <gw>
//	TOPUP <rid> <acct> <amount>      OK <rid> <balance> | ERR <rid> overflow
//	CHARGE <rid> <acct> <amount>     OK <rid> <balance> | DENY <rid> <balance>
//	BALANCE <rid> <acct>             BAL <rid> <balance>
//	WHOAMI <rid>                     YOU <rid> <gw> <n>
//	VERSION <rid>                    VERSION <rid> <version> <pid>
//	STATS <rid> <acct>               STATS <rid> <balance> <charges>   (v2 only)
//
// A malformed line gets "ERR <rid or -> <reason>" and the connection stays
// open; a line longer than MaxLine gets "ERR - too-long" and is the last.
package proto

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Kind is the command of a request, as a request spells it.
type Kind string

// The commands. Stats exists only for servers that keep charge counts.
const (
	Hello   Kind = "HELLO"
	TopUp   Kind = "TOPUP"
	Charge  Kind = "CHARGE"
	Balance Kind = "BALANCE"
	WhoAmI  Kind = "WHOAMI"
	Version Kind = "VERSION"
	Stats   Kind = "STATS"
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

// commands says how many words each command takes after its name, and
// whether the last one is an amount.
var commands = map[Kind]struct {
	args   int
	amount bool
}{
	Hello: {1, false}, TopUp: {3, true}, Charge: {3, true}, Balance: {2, false},
	WhoAmI: {1, false}, Version: {1, false}, Stats: {2, false},
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
	kind := Kind(f[0])
	cmd, ok := commands[kind]
	if !ok || (kind == Stats && !withStats) {
		return req, ReasonUnknown
	}
	if len(f)-1 != cmd.args {
		return req, ReasonBadArgs
	}
	req.Kind = kind
	if kind == Hello {
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
	if s == "" || len(s) > 19 || strings.Trim(s, "0123456789") != "" {
		return 0, false // ParseInt alone would take a sign
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= MinAmount && n <= MaxAmount
}

// MaxLine is the longest request line, in bytes, not counting its "\n" or
// "\r\n" terminator.
const MaxLine = 4096

// ErrTooLong is returned by SplitLine when a line exceeds MaxLine. The server
// answers it with TooLong and closes the connection: it cannot find the next
// request boundary without reading an unbounded line.
var ErrTooLong = errors.New("proto: request line too long")

// SplitLine is a bufio.SplitFunc like bufio.ScanLines, except that it refuses
// lines longer than MaxLine instead of buffering them.
func SplitLine(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		line := dropCR(data[:i])
		if len(line) > MaxLine {
			return 0, nil, ErrTooLong
		}
		return i + 1, line, nil
	}
	// Without a newline yet, MaxLine bytes plus a possible '\r' may still
	// become a valid line.
	if len(data) > MaxLine+1 || (len(data) == MaxLine+1 && data[MaxLine] != '\r') {
		return 0, nil, ErrTooLong
	}
	if atEOF && len(data) > 0 {
		// A final unterminated line, as bufio.ScanLines takes it.
		return len(data), dropCR(data), nil
	}
	return 0, nil, nil
}

func dropCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// Each reply is one line ending in "\n", ready to write.

// Welcome answers HELLO.
func Welcome(gw string) []byte { return line("WELCOME", gw) }

// OK answers a successful TOPUP or CHARGE with the new balance.
func OK(rid string, balance int64) []byte { return line("OK", rid, itoa(balance)) }

// Deny answers a CHARGE larger than the balance, which is unchanged.
func Deny(rid string, balance int64) []byte { return line("DENY", rid, itoa(balance)) }

// Bal answers BALANCE.
func Bal(rid string, balance int64) []byte { return line("BAL", rid, itoa(balance)) }

// You answers WHOAMI: gw is "-" before any HELLO, n counts the connection's
// earlier requests.
func You(rid, gw string, n uint64) []byte {
	if gw == "" {
		gw = "-"
	}
	return line("YOU", rid, gw, strconv.FormatUint(n, 10))
}

// VersionReply answers VERSION.
func VersionReply(rid, version string, pid int) []byte {
	return line("VERSION", rid, version, strconv.Itoa(pid))
}

// StatsReply answers STATS.
func StatsReply(rid string, balance int64, charges uint64) []byte {
	return line("STATS", rid, itoa(balance), strconv.FormatUint(charges, 10))
}

// Err answers a request that could not be served.
func Err(rid, reason string) []byte { return line("ERR", rid, reason) }

// TooLong is the last reply on a connection that sent a line over MaxLine.
func TooLong() []byte { return Err("-", ReasonTooLong) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func line(words ...string) []byte { return []byte(strings.Join(words, " ") + "\n") }
