package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
)

// session is what a connection remembers between requests.
type session struct {
	gw string // from the last HELLO; empty before one
	n  uint64 // requests received so far, malformed ones included
	// changed holds, for a server that carries changes (RollingUpgrades),
	// every account this connection changed in this process's ledger, as
	// it left them. A rolling upgrade snapshots the ledger while the
	// connections are served, so what a connection changed after the
	// snapshot reaches the new process only with the connection. Nil
	// otherwise.
	changed map[string]ledger.Account
}

// note remembers acct as it is now, if the session carries changes.
func (s *session) note(acct string, a ledger.Account) {
	if s.changed != nil {
		s.changed[acct] = a
	}
}

// Session formats: the byte that leads an encoded session, so that a later
// version can change the layout and still read this one. v1 and v2 share
// them.
const (
	// sessionFormat1: uvarint n, then the gateway name to the end.
	sessionFormat1 = 1
	// sessionFormat2: uvarint n, the gateway name (uvarint length, bytes),
	// uvarint count of carried accounts, and for each: its name (uvarint
	// length, bytes), varint balance, uvarint charges.
	sessionFormat2 = 2
)

var errSession = errors.New("server: bad session state")

// encode writes format 1 when there is nothing to carry, so that a
// version that reads format 1 only can still take the connection over in
// every mode but rolling.
func (s *session) encode() []byte {
	if len(s.changed) == 0 {
		b := []byte{sessionFormat1}
		b = binary.AppendUvarint(b, s.n)
		return append(b, s.gw...)
	}
	b := []byte{sessionFormat2}
	b = binary.AppendUvarint(b, s.n)
	b = appendString(b, s.gw)
	b = binary.AppendUvarint(b, uint64(len(s.changed)))
	// Sorted, so that a session encodes the same way every time.
	for _, acct := range slices.Sorted(maps.Keys(s.changed)) {
		a := s.changed[acct]
		b = appendString(b, acct)
		b = binary.AppendVarint(b, a.Balance)
		b = binary.AppendUvarint(b, a.Charges)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeSession reads what encode wrote, in either format. No state means
// a fresh connection. The carried accounts come back in changed, which is
// nil if there were none.
func decodeSession(b []byte) (*session, error) {
	if len(b) == 0 {
		return &session{}, nil
	}
	d := decoder{b: b[1:]}
	var s session
	switch b[0] {
	case sessionFormat1:
		s.n = d.uvarint()
		s.gw = string(d.b)
		d.b = nil
	case sessionFormat2:
		s.n = d.uvarint()
		s.gw = d.str()
		s.changed = d.accounts()
	default:
		return nil, fmt.Errorf("%w: format %d", errSession, b[0])
	}
	if len(d.b) > 0 {
		d.skip(-1, "length: bytes after the last field")
	}
	return &s, d.err
}

// decoder reads a session's fields and remembers the first shortfall, so
// that a damaged state is an error, never a panic or an allocation its
// bytes do not back (as handoff's own decoder).
type decoder struct {
	b   []byte
	err error
}

// skip consumes k bytes; k <= 0 (a varint that is not there) or past the
// end is the shortfall, after which every read fails.
func (d *decoder) skip(k int, what string) {
	if k > 0 && k <= len(d.b) {
		d.b = d.b[k:]
		return
	}
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", errSession, what)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, k := binary.Uvarint(d.b)
	d.skip(k, "count")
	return v
}

func (d *decoder) varint() int64 {
	v, k := binary.Varint(d.b)
	d.skip(k, "balance")
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.skip(-1, "name")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// accounts reads a count and that many accounts; the map grows with
// what the bytes hold, not with what the count claims.
func (d *decoder) accounts() map[string]ledger.Account {
	n := d.uvarint()
	m := map[string]ledger.Account{}
	for i := uint64(0); i < n && d.err == nil; i++ {
		acct := d.str()
		m[acct] = ledger.Account{Balance: d.varint(), Charges: d.uvarint()}
	}
	if n != uint64(len(m)) && d.err == nil {
		d.skip(-1, "account list: a name twice")
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
