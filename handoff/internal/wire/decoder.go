package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrProtocol is wrapped by every error about a malformed or unexpected frame
// from the peer.
var ErrProtocol = errors.New("handoff: protocol error")

// ErrRejected is wrapped by the error a receive returns for the peer's
// ABORT: the other process refused the handoff and said why.
var ErrRejected = errors.New("handoff: rejected by peer")

// Errorf returns an error wrapping ErrProtocol: the peer broke the protocol.
func Errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
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
		d.err = Errorf("field of %d bytes where %d remain", n, len(d.b))
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() byte {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
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

// peekU32 returns the next u32 without taking it (0 if short).
func (d *decoder) peekU32() uint32 {
	if d.err != nil || len(d.b) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(d.b)
}

func (d *decoder) str() string {
	n := int(d.u16())
	if n > MaxString && d.err == nil {
		d.err = Errorf("string of %d bytes, at most %d allowed", n, MaxString)
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

// afterMagic checks the magic that opens a first frame (HELLO, TAKEOVER),
// so that a stranger on the socket is told apart from a peer, and returns
// a decoder of what follows it.
func afterMagic(what Type, p []byte) (*decoder, error) {
	if len(p) < 4 || string(p[:4]) != helloMagic {
		return nil, Errorf("%s without the %q magic", what, helloMagic)
	}
	return &decoder{b: p[4:]}, nil
}

// finish reports a shortfall or bytes left over after the last field.
func (d *decoder) finish(what Type) error {
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	if len(d.b) != 0 {
		return Errorf("%s has %d bytes after its last field", what, len(d.b))
	}
	return nil
}
