package loadcheck

import (
	"fmt"
	"strconv"
	"time"
)

// kind says how a reply is judged: most must equal the model's line
// exactly, VERSION and STATS have more than one right answer.
type kind uint8

const (
	kindExact kind = iota
	kindVersion
	kindStats
)

// pending is one request on the wire, with the reply the model expects.
type pending struct {
	rid  uint64
	kind kind
	req  string // request line, without '\n'
	want string // the exact expected reply (for kindStats: the v2 form)
	sent time.Time
}

// model is what one connection's server state must be, given that the
// server applies this connection's requests in order and nobody else
// touches its accounts. It advances when a request is generated, so a
// request must be generated only once it is certain to be written.
type model struct {
	gw      string
	accts   []string
	bal     []int64
	charges []int64
	sent    uint64 // requests generated so far on the connection, HELLO included
	rid     uint64
}

func newModel(gw, acctPrefix string, n int) *model {
	m := &model{gw: gw, accts: make([]string, n), bal: make([]int64, n), charges: make([]int64, n)}
	for k := range m.accts {
		m.accts[k] = acctPrefix + "-" + strconv.Itoa(k)
	}
	return m
}

// next stamps a request with a fresh rid and counts it for WHOAMI.
func (m *model) next(k kind, want func(rid uint64) string, format string, args ...any) pending {
	m.rid++
	m.sent++
	return pending{rid: m.rid, kind: k, req: fmt.Sprintf(format, append([]any{m.rid}, args...)...), want: want(m.rid)}
}

func (m *model) hello() pending {
	m.sent++
	return pending{rid: 0, req: "HELLO " + m.gw, want: "WELCOME " + m.gw}
}

func (m *model) topup(k int, amount int64) pending {
	m.bal[k] += amount
	b := m.bal[k]
	return m.next(kindExact, func(rid uint64) string { return fmt.Sprintf("OK %d %d", rid, b) },
		"TOPUP %d %s %d", m.accts[k], amount)
}

func (m *model) charge(k int, amount int64) pending {
	verb := "DENY"
	if m.bal[k] >= amount {
		verb = "OK"
		m.bal[k] -= amount
		m.charges[k]++
	}
	b := m.bal[k]
	return m.next(kindExact, func(rid uint64) string { return fmt.Sprintf("%s %d %d", verb, rid, b) },
		"CHARGE %d %s %d", m.accts[k], amount)
}

func (m *model) balance(k int) pending {
	b := m.bal[k]
	return m.next(kindExact, func(rid uint64) string { return fmt.Sprintf("BAL %d %d", rid, b) },
		"BALANCE %d %s", m.accts[k])
}

func (m *model) whoami() pending {
	// The server counts the requests before this one, so read sent before
	// next counts this request.
	gw, n := m.gw, m.sent
	return m.next(kindExact, func(rid uint64) string { return fmt.Sprintf("YOU %d %s %d", rid, gw, n) },
		"WHOAMI %d")
}

func (m *model) version() pending {
	return m.next(kindVersion, func(rid uint64) string { return fmt.Sprintf("VERSION %d v1…|v2… <pid>", rid) },
		"VERSION %d")
}

func (m *model) stats(k int) pending {
	b, c := m.bal[k], m.charges[k]
	return m.next(kindStats, func(rid uint64) string { return fmt.Sprintf("STATS %d %d %d", rid, b, c) },
		"STATS %d %s", m.accts[k])
}
