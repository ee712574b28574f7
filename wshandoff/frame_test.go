package wshandoff

import "testing"

// frame is one unmasked frame: opcode, FIN and payload.
func frame(op byte, fin bool, payload string) []byte {
	b0 := op
	if fin {
		b0 |= finBit
	}
	return append([]byte{b0, byte(len(payload))}, payload...)
}

// TestMessagesCounted: frames counts a data message once its last frame
// has passed, byte by byte or at once: not a fragment, not a control
// frame between fragments, and an empty message too.
func TestMessagesCounted(t *testing.T) {
	var stream []byte
	want := []uint64{}
	add := func(b []byte, count uint64) {
		stream = append(stream, b...)
		for range b {
			want = append(want, 0)
		}
		want[len(want)-1] = count
	}
	add(frame(0x1, true, "one"), 1)
	add(frame(0x2, false, "fr"), 1)
	add(frame(0x9, true, "ping"), 1) // a control frame inside the message
	add(frame(0x0, false, "ag"), 1)
	add(frame(0x0, true, "ment"), 2)
	add(frame(0xa, true, ""), 2) // an empty pong
	add(frame(0x1, true, ""), 3) // an empty message
	add(frame(0x8, true, "\x03\xe8"), 3)

	f := newFrames()
	f.feed(stream)
	if f.messages != 3 {
		t.Fatalf("at once: %d messages, want 3", f.messages)
	}
	f = newFrames()
	last := uint64(0)
	for i, b := range stream {
		f.feed([]byte{b})
		if want[i] != 0 {
			last = want[i]
		}
		if f.messages != last {
			t.Fatalf("after byte %d: %d messages, want %d", i, f.messages, last)
		}
	}
}
