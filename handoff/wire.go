package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ProtocolVersion is the version of the handoff wire protocol (PROTOCOL.md).
// Both ends must speak the same one.
const ProtocolVersion = 5

// protocolVersion is what this process says in HELLO; a variable so that
// tests can play a peer of another version.
var protocolVersion uint16 = ProtocolVersion

// Frame types, one byte on the wire.
const (
	frameHello    = 1
	framePlan     = 2
	frameConns    = 3
	frameProgress = 4
	frameState    = 5
	frameStateEnd = 6
	frameReady    = 7
	frameCommit   = 8
	frameAbort    = 9
	frameFinal    = 10
	frameParked   = 11
	frameCarry    = 12
	frameServing  = 13
	frameClosed   = 14
	frameEnd      = 15
)

var frameNames = map[byte]string{
	frameHello: "HELLO", framePlan: "PLAN", frameConns: "CONNS", frameProgress: "PROGRESS",
	frameState: "STATE", frameStateEnd: "STATE_END", frameReady: "READY",
	frameCommit: "COMMIT", frameAbort: "ABORT", frameFinal: "FINAL", frameParked: "PARKED",
	frameCarry: "CARRY", frameServing: "SERVING", frameClosed: "CLOSED", frameEnd: "END",
}

func frameName(t byte) string {
	if n, ok := frameNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", t)
}

const (
	headerLen     = 8
	flagMore      = 1                  // more packets of this frame follow
	maxPacketData = 60 << 10           // payload bytes per packet, under the default socket buffer
	maxFrame      = 64 << 20           // the largest frame a receiver accepts
	maxFdsPerMsg  = 253                // SCM_MAX_FD
	maxParkedRecs = 4096               // records in a PARKED frame, which carries no fds
	helloMagic    = "HOFF"             // first bytes of a HELLO payload
	maxString     = 4096               // longest version, name or reason string
	maxBatchBytes = 1 << 20            // a CONNS frame is cut near this size
	maxRecordHead = 8 + 2 + 4 + 4 + 16 // a record's fixed part, with slack
)

// ErrProtocol is wrapped by every error about a malformed or unexpected frame
// from the peer.
var ErrProtocol = errors.New("handoff: protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// header is the fixed start of every packet.
type header struct {
	typ   byte
	flags byte
	size  uint32
}

func putHeader(b []byte, h header) {
	b[0], b[1], b[2], b[3] = h.typ, h.flags, 0, 0
	binary.BigEndian.PutUint32(b[4:], h.size)
}

func parseHeader(pkt []byte) (header, error) {
	if len(pkt) < headerLen {
		return header{}, protoErr("packet of %d bytes is shorter than a header", len(pkt))
	}
	h := header{typ: pkt[0], flags: pkt[1], size: binary.BigEndian.Uint32(pkt[4:])}
	if pkt[2] != 0 || pkt[3] != 0 || h.flags&^flagMore != 0 {
		return h, protoErr("reserved header bits set in %s packet", frameName(h.typ))
	}
	if int(h.size) != len(pkt)-headerLen {
		return h, protoErr("%s packet says %d payload bytes, carries %d", frameName(h.typ), h.size, len(pkt)-headerLen)
	}
	return h, nil
}

// hello is the first frame each side sends.
type hello struct {
	version    uint16
	pid        uint32
	fdLimit    uint32 // RLIMIT_NOFILE of the sender
	fdOpen     uint32 // fds the sender has open
	appVersion string
	app        string // the application's name (Options.App)
}

func (h hello) encode() []byte {
	b := append([]byte(helloMagic), 0, 0)
	binary.BigEndian.PutUint16(b[4:], h.version)
	b = binary.BigEndian.AppendUint32(b, h.pid)
	b = binary.BigEndian.AppendUint32(b, h.fdLimit)
	b = binary.BigEndian.AppendUint32(b, h.fdOpen)
	b = appendString(b, h.appVersion)
	return appendString(b, h.app)
}

// decodeHello reads a HELLO. Of a HELLO of another protocol version it
// reads the version alone, whose layout every version shares: the rest
// may differ, and the caller refuses the peer for its version, saying so,
// rather than for a field it cannot read.
func decodeHello(p []byte) (hello, error) {
	var h hello
	if len(p) < 4 || string(p[:4]) != helloMagic {
		return h, protoErr("HELLO without the %q magic", helloMagic)
	}
	d := decoder{b: p[4:]}
	h.version = d.u16()
	if d.err == nil && h.version != protocolVersion {
		return h, nil
	}
	h.pid, h.fdLimit, h.fdOpen = d.u32(), d.u32(), d.u32()
	h.appVersion = d.str()
	h.app = d.str()
	return h, d.finish("HELLO")
}

// record is one connection in a CONNS frame; its fd travels in SCM_RIGHTS
// at the same index.
type record struct {
	id     uint64
	kind   string
	unread []byte
	state  []byte
}

func (r record) size() int { return maxRecordHead + len(r.kind) + len(r.unread) + len(r.state) }

func encodeConns(seq uint32, recs []record) []byte {
	b := binary.BigEndian.AppendUint32(nil, seq)
	b = binary.BigEndian.AppendUint16(b, uint16(len(recs)))
	for _, r := range recs {
		b = binary.BigEndian.AppendUint64(b, r.id)
		b = appendString(b, r.kind)
		b = appendBytes(b, r.unread)
		b = appendBytes(b, r.state)
	}
	return b
}

// decodeConns decodes a CONNS or PARKED frame (typ): both carry records.
func decodeConns(typ byte, p []byte) (seq uint32, recs []record, err error) {
	d := decoder{b: p}
	seq = d.u32()
	n := int(d.u16())
	if most := maxRecords(typ); n > most {
		return 0, nil, protoErr("%s frame claims %d connections, at most %d fit", frameName(typ), n, most)
	}
	recs = make([]record, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		recs = append(recs, record{id: d.u64(), kind: d.str(), unread: d.bytes(), state: d.bytes()})
	}
	return seq, recs, d.finish(frameName(typ))
}

// maxRecords is how many records a frame of typ may carry: one per fd in
// CONNS, more in PARKED.
func maxRecords(typ byte) int {
	if typ == frameParked {
		return maxParkedRecs
	}
	return maxFdsPerMsg
}

// final is the FINAL frame: how many parked connections follow, and how
// many of them were not sent early and so bring their fds now.
type final struct{ conns, late uint32 }

func (f final) encode() []byte {
	return binary.BigEndian.AppendUint32(u32Frame(f.conns), f.late)
}

func decodeFinal(p []byte) (final, error) {
	d := decoder{b: p}
	f := final{conns: d.u32(), late: d.u32()}
	if d.err == nil && f.late > f.conns {
		return f, protoErr("FINAL says %d late connections of %d", f.late, f.conns)
	}
	return f, d.finish("FINAL")
}

// maxClosedIDs is how many ids a CLOSED frame carries at most.
const maxClosedIDs = 4096

func encodeIDs(ids []uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(ids)))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	return b
}

// decodeIDs reads a CLOSED frame.
func decodeIDs(p []byte) ([]uint64, error) {
	d := decoder{b: p}
	n := d.u32()
	if d.err == nil && (n == 0 || n > maxClosedIDs || int(n)*8 != len(d.b)) {
		return nil, protoErr("CLOSED with %d ids in %d bytes", n, len(d.b))
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = d.u64()
	}
	return ids, d.finish("CLOSED")
}

// moveEnd is the END frame of a Rolling move: how many connections moved,
// stayed with the old process to drain, and were closed at the deadline.
type moveEnd struct{ moved, stayed, closed uint32 }

func (e moveEnd) encode() []byte {
	b := binary.BigEndian.AppendUint32(u32Frame(e.moved), e.stayed)
	return binary.BigEndian.AppendUint32(b, e.closed)
}

func decodeMoveEnd(p []byte) (moveEnd, error) {
	d := decoder{b: p}
	e := moveEnd{moved: d.u32(), stayed: d.u32(), closed: d.u32()}
	return e, d.finish("END")
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// decoder reads big-endian fields and remembers the first shortfall, so a
// truncated frame is an error, never a panic or an allocation its bytes do
// not back.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = protoErr("field of %d bytes where %d remain", n, len(d.b))
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) str() string {
	n := int(d.u16())
	if n > maxString && d.err == nil {
		d.err = protoErr("string of %d bytes, at most %d allowed", n, maxString)
	}
	return string(d.take(n))
}

func (d *decoder) bytes() []byte {
	n := d.u32()
	if p := d.take(int(n)); p != nil {
		return append([]byte(nil), p...)
	}
	return nil
}

// finish reports a shortfall or bytes left over after the last field.
func (d *decoder) finish(what string) error {
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	if len(d.b) != 0 {
		return protoErr("%s has %d bytes after its last field", what, len(d.b))
	}
	return nil
}

func u32Frame(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func decodeU32(p []byte, what string) (uint32, error) {
	d := decoder{b: p}
	v := d.u32()
	return v, d.finish(what)
}
