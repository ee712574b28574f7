// Package fields reads the big-endian fields of the project's binary
// formats: the handoff protocol's frames (handoff/internal/wire) and a
// TLS connection's state (tlshandoff). A Reader remembers the first
// shortfall, so that a truncated input is an error, never a panic or an
// allocation its bytes do not back; each format names its errors by the
// sentinel it wraps.
package fields

import (
	"encoding/binary"
	"fmt"
)

// Reader reads fields from the front of a byte slice.
type Reader struct {
	b    []byte
	err  error
	kind error // wrapped by every error of the Reader: the format's sentinel
}

// NewReader reads b; its errors wrap kind.
func NewReader(b []byte, kind error) Reader { return Reader{b: b, kind: kind} }

// Take returns the next n bytes, or nil once short (the error is kept).
// The slice's capacity ends with it: appending to it never writes over
// the fields after it.
func (r *Reader) Take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.Fail("field of %d bytes where %d remain", n, len(r.b))
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

// Peek returns the next n bytes without taking them, or nil if short.
func (r *Reader) Peek(n int) []byte {
	if r.err != nil || n > len(r.b) {
		return nil
	}
	return r.b[:n:n]
}

func (r *Reader) U8() byte {
	if p := r.Take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *Reader) U16() uint16 {
	if p := r.Take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *Reader) U32() uint32 {
	if p := r.Take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *Reader) U64() uint64 {
	if p := r.Take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// Len is how many bytes are left.
func (r *Reader) Len() int { return len(r.b) }

// Err is the first error: a shortfall, or one Fail recorded.
func (r *Reader) Err() error { return r.err }

// Fail records an error of the format, wrapping its sentinel, unless one
// is recorded already: the first one is the one that explains.
func (r *Reader) Fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{r.kind}, args...)...)
	}
}
