package proto

import "strconv"

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

func line(words ...string) []byte {
	n := len(words)
	for _, w := range words {
		n += len(w)
	}
	b := make([]byte, 0, n)
	for i, w := range words {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, w...)
	}
	return append(b, '\n')
}
