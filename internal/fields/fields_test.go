package fields

import (
	"errors"
	"strings"
	"testing"
)

var errKind = errors.New("kind")

// TestShortfall: a field longer than what is left is an error wrapping
// the format's sentinel; every read after it gives zero values, and the
// first error is the one kept.
func TestShortfall(t *testing.T) {
	r := NewReader([]byte{1, 2, 3}, errKind)
	if got := r.U16(); got != 0x0102 {
		t.Fatalf("U16 = %#x", got)
	}
	if got := r.U32(); got != 0 {
		t.Fatalf("U32 past the end = %d, want 0", got)
	}
	err := r.Err()
	if !errors.Is(err, errKind) || !strings.Contains(err.Error(), "field of 4 bytes where 1 remain") {
		t.Fatalf("error %v", err)
	}
	r.Fail("later")
	if r.U8() != 0 || r.Err() != err {
		t.Fatalf("after the shortfall: %v, want the first error kept", r.Err())
	}
}

// TestTakeCapacity: appending to a field taken never writes over the
// fields after it.
func TestTakeCapacity(t *testing.T) {
	b := []byte{1, 2, 3, 4}
	r := NewReader(b, errKind)
	p := r.Take(2)
	_ = append(p, 9)
	if r.U16() != 0x0304 || r.Err() != nil {
		t.Fatalf("the next field was overwritten: %v %v", b, r.Err())
	}
	if r.Peek(1) != nil || r.Len() != 0 {
		t.Fatalf("Peek past the end gave bytes")
	}
}
