package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"
)

// The snapshot container. This file is the only one that knows it, so that
// a shared statefile format can replace it later.
//
//	"PDFS" | schema u16 | body | crc32 (IEEE) of all the preceding bytes
//
// Integers are big-endian; a string is a u32 length and its bytes.
//
//	schema 1 body: u32 n, n × (string acct, i64 balance),
//	               u32 m, m × (string acct, u64 charges)
//	schema 2 body: u32 n, n × (string acct, i64 balance, u64 charges)

// Schemas known to this package.
const (
	Schema1 uint16 = 1
	Schema2 uint16 = 2
)

const magic = "PDFS"

// ErrCorrupt is returned, wrapped, for a snapshot that fails validation.
var ErrCorrupt = errors.New("ledger: corrupt snapshot")

// Save writes l as a schema 1 snapshot.
func (l *V1) Save(w io.Writer) error { return encode(w, Schema1, l.appendBody) }

// Save writes l as a schema 2 snapshot.
func (l *V2) Save(w io.Writer) error { return encode(w, Schema2, l.appendBody) }

// Load replaces l with the snapshot read from r, of either schema, and
// returns the schema it was written in. On error l is unchanged.
func (l *V1) Load(r io.Reader) (from uint16, err error) {
	v1, v2, from, err := decode(r)
	if err != nil {
		return 0, err
	}
	if v2 != nil {
		v1 = Down2to1(v2)
	}
	*l = *v1
	return from, nil
}

// Load replaces l with the snapshot read from r, of either schema, and
// returns the schema it was written in. On error l is unchanged.
func (l *V2) Load(r io.Reader) (from uint16, err error) {
	v1, v2, from, err := decode(r)
	if err != nil {
		return 0, err
	}
	if v1 != nil {
		v2 = Up1to2(v1)
	}
	*l = *v2
	return from, nil
}

func encode(w io.Writer, schema uint16, body func([]byte) []byte) error {
	b := append([]byte(magic), 0, 0)
	binary.BigEndian.PutUint16(b[len(magic):], schema)
	b = body(b)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("ledger: write snapshot: %w", err)
	}
	return nil
}

// Keys are written sorted so that equal ledgers give equal snapshots.

func (l *V1) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.balances)))
	for _, k := range slices.Sorted(maps.Keys(l.balances)) {
		b = appendString(b, k)
		b = binary.BigEndian.AppendUint64(b, uint64(l.balances[k]))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.charges)))
	for _, k := range slices.Sorted(maps.Keys(l.charges)) {
		b = appendString(b, k)
		b = binary.BigEndian.AppendUint64(b, l.charges[k])
	}
	return b
}

func (l *V2) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.accounts)))
	for _, k := range slices.Sorted(maps.Keys(l.accounts)) {
		a := l.accounts[k]
		b = appendString(b, k)
		b = binary.BigEndian.AppendUint64(b, uint64(a.Balance))
		b = binary.BigEndian.AppendUint64(b, a.Charges)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// decode reads a whole snapshot and returns it in its own layout: exactly one
// of v1 and v2 is set on success.
func decode(r io.Reader) (v1 *V1, v2 *V2, schema uint16, err error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("ledger: read snapshot: %w", err)
	}
	const head, tail = len(magic) + 2, 4
	if len(data) < head+tail || string(data[:len(magic)]) != magic {
		return nil, nil, 0, fmt.Errorf("%w: not a PDFS snapshot", ErrCorrupt)
	}
	body, sum := data[:len(data)-tail], binary.BigEndian.Uint32(data[len(data)-tail:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, nil, 0, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	schema = binary.BigEndian.Uint16(data[len(magic):])
	d := &decoder{b: body[head:]}
	switch schema {
	case Schema1:
		v1 = d.v1()
	case Schema2:
		v2 = d.v2()
	default:
		return nil, nil, 0, fmt.Errorf("%w: unknown schema %d", ErrCorrupt, schema)
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, nil, 0, d.err
	}
	return v1, v2, schema, nil
}

// decoder reads a snapshot body. After the first error every read returns
// zero values and the error stays in err.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n > len(d.b) {
		d.fail("truncated")
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u32() uint32 {
	if p := d.bytes(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.bytes(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) str() string { return string(d.bytes(int(d.u32()))) }

// count reads a record count and checks that the remaining input can hold
// that many records of at least size bytes, so that a corrupt count cannot
// make us allocate more than the input's size.
func (d *decoder) count(size int) int {
	n := d.u32()
	if uint64(n)*uint64(size) > uint64(len(d.b)) {
		d.fail("count %d exceeds input", n)
		return 0
	}
	return int(n)
}

// balance reads a balance; balances never go negative.
func (d *decoder) balance(acct string) int64 {
	b := int64(d.u64())
	if b < 0 {
		d.fail("negative balance for %q", acct)
	}
	return b
}

func (d *decoder) v1() *V1 {
	n := d.count(4 + 8)
	l := &V1{balances: make(map[string]int64, n)}
	for range n {
		k := d.str()
		if _, dup := l.balances[k]; dup {
			d.fail("duplicate account %q", k)
		}
		l.balances[k] = d.balance(k)
	}
	m := d.count(4 + 8)
	l.charges = make(map[string]uint64, m)
	for range m {
		k := d.str()
		if _, dup := l.charges[k]; dup {
			d.fail("duplicate account %q", k)
		}
		l.charges[k] = d.u64()
	}
	return l
}

func (d *decoder) v2() *V2 {
	n := d.count(4 + 8 + 8)
	l := &V2{accounts: make(map[string]*Account, n)}
	for range n {
		k := d.str()
		if _, dup := l.accounts[k]; dup {
			d.fail("duplicate account %q", k)
		}
		l.accounts[k] = &Account{Balance: d.balance(k), Charges: d.u64()}
	}
	return l
}
