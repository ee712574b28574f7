package server

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The protocol, kept apart from connections and the ledger so that every
// rule is tested on its own. One request per line, ended by "\n" (a "\r"
// before it is dropped), and one reply line per request, in order:
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
// open; a line longer than maxLine gets "ERR - too-long" and is the last.

// Amount bounds, in cents.
const (
	minAmount = 1
	maxAmount = 1_000_000_000_000
)

// Reasons given in ERR replies.
const (
	reasonUnknown   = "unknown-command"
	reasonBadArgs   = "bad-args"
	reasonBadAmount = "bad-amount"
	reasonEmpty     = "empty-line"
	reasonOverflow  = "overflow"
	reasonTooLong   = "too-long"
)

// request is a parsed request line.
type request struct {
	cmd    string // HELLO, TOPUP, ...
	rid    string // "-" for HELLO, which has none
	gw     string // HELLO only
	acct   string // TOPUP, CHARGE, BALANCE, STATS
	amount int64  // TOPUP, CHARGE
}

// commands says how many words each command takes after its name, and
// whether the last one is an amount.
var commands = map[string]struct {
	args   int
	amount bool
}{
	"HELLO": {1, false}, "TOPUP": {3, true}, "CHARGE": {3, true}, "BALANCE": {2, false},
	"WHOAMI": {1, false}, "VERSION": {1, false}, "STATS": {2, false},
}

// parse parses one request line, without its terminator. withStats says
// whether STATS is a command; a v1 server answers it as unknown. On
// success reason is empty. Otherwise reason is the ERR reason and req.rid
// the rid to echo: the second word, or "-" if there is none.
func parse(line []byte, withStats bool) (req request, reason string) {
	f := strings.Fields(string(line))
	req.rid = "-"
	if len(f) == 0 {
		return req, reasonEmpty
	}
	if len(f) > 1 {
		req.rid = f[1]
	}
	cmd, ok := commands[f[0]]
	if !ok || (f[0] == "STATS" && !withStats) {
		return req, reasonUnknown
	}
	if len(f)-1 != cmd.args {
		return req, reasonBadArgs
	}
	req.cmd = f[0]
	if req.cmd == "HELLO" {
		req.rid, req.gw = "-", f[1]
		return req, ""
	}
	if cmd.args >= 2 {
		req.acct = f[2]
	}
	if cmd.amount {
		if req.amount, ok = parseAmount(f[3]); !ok {
			return req, reasonBadAmount
		}
	}
	return req, ""
}

// parseAmount accepts plain decimal digits within [minAmount, maxAmount]:
// no sign, no spaces, no exponent.
func parseAmount(s string) (int64, bool) {
	if s == "" || len(s) > 19 || strings.Trim(s, "0123456789") != "" {
		return 0, false // ParseInt alone would take a sign
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= minAmount && n <= maxAmount
}

// maxLine is the longest request line, in bytes, not counting its "\n" or
// "\r\n" terminator.
const maxLine = 4096

// errTooLong is splitLine's answer to a line over maxLine. The server
// answers it with "ERR - too-long" and closes the connection: it cannot
// find the next request without reading an unbounded line.
var errTooLong = errors.New("server: request line too long")

// splitLine is a bufio.SplitFunc like bufio.ScanLines, except that it
// refuses lines longer than maxLine instead of buffering them.
func splitLine(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		line := dropCR(data[:i])
		if len(line) > maxLine {
			return 0, nil, errTooLong
		}
		return i + 1, line, nil
	}
	// Without a newline yet, maxLine bytes plus a possible '\r' may still
	// become a valid line.
	if len(data) > maxLine+1 || (len(data) == maxLine+1 && data[maxLine] != '\r') {
		return 0, nil, errTooLong
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

// reply is one reply line: the words, numbers in decimal, separated by
// spaces and ended by "\n".
func reply(words ...any) []byte { return fmt.Appendln(nil, words...) }
