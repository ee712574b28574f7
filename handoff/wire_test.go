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
	h := hello{version: ProtocolVersion, pid: 42, fdLimit: 20000, fdOpen: 17, appVersion: "v2.0.0", app: "example.com/shop/cmd/shopd"}
	got, err := decodeHello(h.encode())
	if err != nil || got != h {
		t.Fatalf("hello: %+v, %v", got, err)
	}
	for _, p := range []plan{{mode: AllAtOnce, early: 3, state: true}, {mode: Rolling}, {mode: ListenersOnly}} {
		if got, err := decodePlan(p.encode()); err != nil || got != p {
			t.Fatalf("plan %+v: %+v, %v", p, got, err)
		}
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

// helloV4 is a HELLO as protocol version 4 laid it out: no application
// name.
func helloV4() []byte {
	b := append([]byte(helloMagic), 0, 4)
	b = append(b, 0, 0, 0, 42, 0, 0, 4, 0, 0, 0, 0, 9)
	return appendString(b, "v1")
}

// TestHelloOfOtherVersions: a HELLO of another protocol version is read
// for its version alone, whatever follows, so that the peer is refused
// for its version (and says which), not for a field of another layout.
func TestHelloOfOtherVersions(t *testing.T) {
	newer := append(hello{version: ProtocolVersion + 1, app: "x"}.encode(), "a field of a later version"...)
	for name, p := range map[string][]byte{"version 4": helloV4(), "newer": newer} {
		h, err := decodeHello(p)
		if err != nil || h.version == ProtocolVersion || h.app != "" {
			t.Errorf("%s: %+v, %v; want its version alone", name, h, err)
		}
	}
	// This version's number with version 4's layout is a broken HELLO.
	p := helloV4()
	p[5] = ProtocolVersion
	if _, err := decodeHello(p); !errors.Is(err, ErrProtocol) {
		t.Errorf("HELLO of version %d without the application name: %v", ProtocolVersion, err)
	}
}

// TestBadPlansRefused: PLAN's flags say only what the mode allows.
func TestBadPlansRefused(t *testing.T) {
	for name, p := range map[string][]byte{
		"state in listeners-only": {byte(ListenersOnly), 0, 0, 0, 0, planState},
		"unknown flag":            {byte(AllAtOnce), 0, 0, 0, 0, 2},
		"version 4's PLAN":        {byte(AllAtOnce), 0, 0, 0, 0},
		"unknown mode":            {byte(modes), 0, 0, 0, 0, 0},
		"trailing byte":           {byte(Rolling), 0, 0, 0, 0, 0, 0},
	} {
		if _, err := decodePlan(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestBadFramesRefused: every truncation of a valid frame, and a few lies
// about lengths, are protocol errors, never panics.
func TestBadFramesRefused(t *testing.T) {
	hb := hello{version: ProtocolVersion, appVersion: "v1", app: "pdf"}.encode()
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
	f.Add(hello{version: ProtocolVersion, appVersion: "v1", app: "example.com/shop/cmd/shopd"}.encode())
	f.Add(hello{version: ProtocolVersion, pid: 7, fdLimit: 1024, fdOpen: 9}.encode()) // empty names
	f.Add(helloV4())
	f.Add(plan{mode: Rolling, early: 300, state: true}.encode())
	f.Add(final{conns: 9, late: 2}.encode())
	f.Add(encodeConns(3, []record{{id: 1, kind: "tcp", unread: []byte("x"), state: []byte("y")}}))
	f.Add(carried{generation: 2, values: map[string]float64{"app.x": 1}}.encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		if h, err := decodeHello(p); err == nil {
			if back, err := decodeHello(h.encode()); err != nil || back != h {
				t.Fatalf("hello does not round-trip: %+v", h)
			}
		}
		if pl, err := decodePlan(p); err == nil {
			if !bytes.Equal(pl.encode(), p) || pl.state && !pl.mode.sendsState() {
				t.Fatalf("plan does not round-trip or is inconsistent: %+v", pl)
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
