package handoff

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
)

func TestFramesRoundTrip(t *testing.T) {
	h := hello{version: 1, pid: 42, fdLimit: 20000, fdOpen: 17, appVersion: "v2.0.0"}
	got, err := decodeHello(h.encode())
	if err != nil || got != h {
		t.Fatalf("hello: %+v, %v", got, err)
	}
	recs := []record{{id: 1, kind: "tcp:127.0.0.1:7070", unread: []byte("CHAR"), state: []byte{1, 2}}, {id: 9}}
	seq, back, err := decodeConns(frameConns, encodeConns(7, recs))
	if err != nil || seq != 7 || len(back) != 2 || back[0].kind != recs[0].kind ||
		!bytes.Equal(back[0].unread, recs[0].unread) || !bytes.Equal(back[0].state, recs[0].state) || back[1].id != 9 {
		t.Fatalf("conns: %d %+v %v", seq, back, err)
	}
}

// TestCarryRoundTrip: a CARRY frame comes back whole, and every
// truncation of it is a protocol error.
func TestCarryRoundTrip(t *testing.T) {
	v := carried{generation: 7, start: time.Unix(1700000000, 5), values: map[string]float64{
		"handoff.committed": 7, "app.requests": 12345.5, "handoff.rolled_back.timeout": 1}}
	b := v.encode()
	back, err := decodeCarried(b)
	if err != nil || back.generation != 7 || !back.start.Equal(v.start) || !maps.Equal(back.values, v.values) {
		t.Fatalf("carry: %+v, %v", back, err)
	}
	for i := 0; i < len(b); i++ {
		if _, err := decodeCarried(b[:i]); !errors.Is(err, ErrProtocol) {
			t.Errorf("carry cut at %d: %v", i, err)
		}
	}
}

// TestBadFramesRefused: every truncation of a valid frame, and a few lies
// about lengths, are protocol errors, never panics.
func TestBadFramesRefused(t *testing.T) {
	hb := hello{version: 1, appVersion: "v1"}.encode()
	cb := encodeConns(0, []record{{id: 1, kind: "k", unread: []byte("abc"), state: []byte("s")}})
	for i := 0; i < len(hb); i++ {
		if _, err := decodeHello(hb[:i]); !errors.Is(err, ErrProtocol) {
			t.Errorf("hello cut at %d: %v", i, err)
		}
	}
	for i := 0; i < len(cb); i++ {
		if _, _, err := decodeConns(frameConns, cb[:i]); !errors.Is(err, ErrProtocol) {
			t.Errorf("conns cut at %d: %v", i, err)
		}
	}
	huge := append([]byte(nil), cb...)
	huge[6+8+2+1] = 0xff // unread length's high byte: ~4 GiB claimed
	if _, _, err := decodeConns(frameConns, huge); !errors.Is(err, ErrProtocol) {
		t.Errorf("huge length: %v", err)
	}
	tooMany := []byte{0, 0, 0, 0, 1, 0}
	if _, _, err := decodeConns(frameConns, tooMany); !errors.Is(err, ErrProtocol) {
		t.Errorf("256 records: %v", err)
	}
	// PARKED frames carry no fds, so more records, but not without bound.
	if _, _, err := decodeConns(frameParked, tooMany); errors.Is(err, ErrProtocol) && strings.Contains(err.Error(), "at most") {
		t.Errorf("256 PARKED records refused for their number: %v", err)
	}
	if _, _, err := decodeConns(frameParked, []byte{0, 0, 0, 0, 0x10, 1}); err == nil || !strings.Contains(err.Error(), "at most 4096") {
		t.Errorf("4097 PARKED records: %v", err)
	}
	if _, err := decodeHello(append(hb, 0)); !errors.Is(err, ErrProtocol) {
		t.Errorf("trailing byte: %v", err)
	}
	bad := [][]byte{{1, 0, 0, 0, 0, 0, 0, 5, 'x'}, {1, 2, 0, 0, 0, 0, 0, 0}, {1, 0, 1, 0, 0, 0, 0, 0}, {1, 0}}
	for _, p := range bad {
		if _, err := parseHeader(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("header %v: %v", p, err)
		}
	}
}

func FuzzDecodeFrames(f *testing.F) {
	f.Add(hello{version: 1, appVersion: "v1"}.encode())
	f.Add(final{conns: 9, late: 2}.encode())
	f.Add(encodeConns(3, []record{{id: 1, kind: "tcp", unread: []byte("x"), state: []byte("y")}}))
	f.Add(carried{generation: 2, values: map[string]float64{"app.x": 1}}.encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		if h, err := decodeHello(p); err == nil {
			if back, err := decodeHello(h.encode()); err != nil || back != h {
				t.Fatalf("hello does not round-trip: %+v", h)
			}
		}
		if seq, recs, err := decodeConns(frameConns, p); err == nil {
			if !bytes.Equal(encodeConns(seq, recs), p) {
				t.Fatal("conns does not round-trip")
			}
		}
		if f, err := decodeFinal(p); err == nil {
			if !bytes.Equal(f.encode(), p) || f.late > f.conns {
				t.Fatalf("final does not round-trip or is inconsistent: %+v", f)
			}
		}
		if v, err := decodeCarried(p); err == nil {
			if back, err := decodeCarried(v.encode()); err != nil || back.generation != v.generation || len(back.values) != len(v.values) {
				t.Fatalf("carry does not round-trip: %+v", v)
			}
		}
		_, _ = parseHeader(p)
	})
}
