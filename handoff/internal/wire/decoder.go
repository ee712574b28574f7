package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/handoff-dev/handoff/internal/fields"
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

// decoder reads a frame's fields (package fields); its errors wrap
// ErrProtocol.
type decoder struct{ fields.Reader }

func newDecoder(p []byte) *decoder { return &decoder{fields.NewReader(p, ErrProtocol)} }

// peekU32 returns the next u32 without taking it (0 if short).
func (d *decoder) peekU32() uint32 {
	if p := d.Peek(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) str() string {
	n := int(d.U16())
	if n > MaxString {
		d.Fail("string of %d bytes, at most %d allowed", n, MaxString)
	}
	return string(d.Take(n))
}

func (d *decoder) bytes() []byte {
	n := d.U32()
	if p := d.Take(int(n)); p != nil {
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
	return newDecoder(p[4:]), nil
}

// finish reports a shortfall or bytes left over after the last field.
func (d *decoder) finish(what Type) error {
	if err := d.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if d.Len() != 0 {
		return Errorf("%s has %d bytes after its last field", what, d.Len())
	}
	return nil
}
