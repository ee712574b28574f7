package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"maps"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFramesRoundTrip(t *testing.T) {
	h := Hello{Version: Version, PID: 42, FdLimit: 20000, FdOpen: 17, AppVersion: "v2.0.0", App: "example.com/shop/cmd/shopd"}
	var got Hello
	if err := got.Decode(h.Append(nil)); err != nil || got != h {
		t.Fatalf("hello: %+v, %v", got, err)
	}
	for _, p := range []Plan{{Mode: 0, Early: 3, State: true}, {Mode: 1}, {Mode: 2}, {Mode: 0, Early: 2, State: true, Precopy: true}} {
		var got Plan
		if err := got.Decode(p.Append(nil)); err != nil || got != p {
			t.Fatalf("plan %+v: %+v, %v", p, got, err)
		}
	}
	recs := []Record{{ID: 1, Kind: "tcp:127.0.0.1:7070", Unread: []byte("CHAR"), State: []byte{1, 2}}, {ID: 9}}
	var back Conns
	err := back.Decode(Conns{Seq: 7, Records: recs}.Append(nil))
	if err != nil || back.Seq != 7 || len(back.Records) != 2 || back.Records[0].Kind != recs[0].Kind ||
		!bytes.Equal(back.Records[0].Unread, recs[0].Unread) || !bytes.Equal(back.Records[0].State, recs[0].State) ||
		back.Records[1].ID != 9 {
		t.Fatalf("conns: %+v %v", back, err)
	}
}

// TestCarryRoundTrip: a CARRY frame comes back whole, and every
// truncation of it is a protocol error.
func TestCarryRoundTrip(t *testing.T) {
	v := Carry{Generation: 7, Start: time.Unix(1700000000, 5), Values: map[string]float64{
		"handoff.committed": 7, "app.requests": 12345.5, "handoff.rolled_back.timeout": 1}}
	b := v.Append(nil)
	var back Carry
	if err := back.Decode(b); err != nil || back.Generation != 7 || !back.Start.Equal(v.Start) || !maps.Equal(back.Values, v.Values) {
		t.Fatalf("carry: %+v, %v", back, err)
	}
	for i := 0; i < len(b); i++ {
		if err := new(Carry).Decode(b[:i]); !errors.Is(err, ErrProtocol) {
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
	newer := append(Hello{Version: Version + 1, App: "x"}.Append(nil), "a field of a later version"...)
	for name, p := range map[string][]byte{"version 4": helloV4(), "newer": newer} {
		var h Hello
		if err := h.Decode(p); err != nil || h.Version == Version || h.App != "" {
			t.Errorf("%s: %+v, %v; want its version alone", name, h, err)
		}
	}
	// This version's number with version 4's layout is a broken HELLO.
	p := helloV4()
	p[5] = Version
	if err := new(Hello).Decode(p); !errors.Is(err, ErrProtocol) {
		t.Errorf("HELLO of version %d without the application name: %v", Version, err)
	}
}

// TestBadFramesRefused: every truncation of a valid frame, and a few lies
// about lengths, are protocol errors, never panics.
func TestBadFramesRefused(t *testing.T) {
	hb := Hello{Version: Version, AppVersion: "v1", App: "pdf"}.Append(nil)
	cb := Conns{Records: []Record{{ID: 1, Kind: "k", Unread: []byte("abc"), State: []byte("s")}}}.Append(nil)
	for i := 0; i < len(hb); i++ {
		if err := new(Hello).Decode(hb[:i]); !errors.Is(err, ErrProtocol) {
			t.Errorf("hello cut at %d: %v", i, err)
		}
	}
	for i := 0; i < len(cb); i++ {
		if err := new(Conns).Decode(cb[:i]); !errors.Is(err, ErrProtocol) {
			t.Errorf("conns cut at %d: %v", i, err)
		}
	}
	huge := append([]byte(nil), cb...)
	huge[6+8+2+1] = 0xff // unread length's high byte: ~4 GiB claimed
	if err := new(Conns).Decode(huge); !errors.Is(err, ErrProtocol) {
		t.Errorf("huge length: %v", err)
	}
	tooMany := []byte{0, 0, 0, 0, 1, 0}
	if err := new(Conns).Decode(tooMany); !errors.Is(err, ErrProtocol) {
		t.Errorf("256 records: %v", err)
	}
	// PARKED frames carry no fds, so more records, but not without bound.
	if err := new(Parked).Decode(tooMany); errors.Is(err, ErrProtocol) && strings.Contains(err.Error(), "at most") {
		t.Errorf("256 PARKED records refused for their number: %v", err)
	}
	if err := new(Parked).Decode([]byte{0, 0, 0, 0, 0x10, 1}); err == nil || !strings.Contains(err.Error(), "at most 4096") {
		t.Errorf("4097 PARKED records: %v", err)
	}
	if err := new(Hello).Decode(append(hb, 0)); !errors.Is(err, ErrProtocol) {
		t.Errorf("trailing byte: %v", err)
	}
	bad := [][]byte{{1, 0, 0, 0, 0, 0, 0, 5, 'x'}, {1, 2, 0, 0, 0, 0, 0, 0}, {1, 0, 1, 0, 0, 0, 0, 0}, {1, 0}}
	for _, p := range bad {
		if _, err := parseHeader(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("header %v: %v", p, err)
		}
	}
}

// TestBadPlansRefused: PLAN's flags and length are the wire's to check
// (what a mode allows is the sessions', see package handoff).
func TestBadPlansRefused(t *testing.T) {
	for name, p := range map[string][]byte{
		"unknown flag":           {0, 0, 0, 0, 0, 4},
		"unknown flag and state": {0, 0, 0, 0, 0, 5},
		"every flag":             {0, 0, 0, 0, 0, 0xff},
		"pre-copy without state": {0, 0, 0, 0, 0, 2},
		"version 4's PLAN":       {0, 0, 0, 0, 0},
		"trailing byte":          {1, 0, 0, 0, 0, 0, 0},
	} {
		if err := new(Plan).Decode(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestPrecopyFrames: PLAN's pre-copy flag is bit 2, beside the state's
// bit 1, so that a PLAN without it has the bytes of the releases before
// it; PRECOPY is one byte, its step, and a step this version does not
// know is refused.
func TestPrecopyFrames(t *testing.T) {
	b := Plan{Mode: 0, Early: 3, State: true, Precopy: true}.Append(nil)
	if got := hex.EncodeToString(b); got != "000000000303" {
		t.Errorf("PLAN with a pre-copy: %s", got)
	}
	for step := PrecopyDecline; step < precopySteps; step++ {
		var got Precopy
		if err := got.Decode(Precopy{Step: step}.Append(nil)); err != nil || got.Step != step {
			t.Errorf("PRECOPY %s: %+v, %v", step, got, err)
		}
	}
	for _, p := range [][]byte{{}, {byte(precopySteps)}, {1, 0}} {
		if err := new(Precopy).Decode(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("PRECOPY %x: %v", p, err)
		}
	}
	m := Msg{Type: TypePrecopy, Payload: Precopy{Step: PrecopyTake}.Append(nil)}
	if err := new(Precopy).Expect(m, PrecopyLoaded); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "take") {
		t.Errorf("PRECOPY take where loaded was expected: %v", err)
	}
}

// TestExpect: a step that waits for one frame type refuses every other,
// naming both, and decodes nothing from it.
func TestExpect(t *testing.T) {
	m := Msg{Type: TypeFinal, Payload: Final{Conns: 2, Late: 1}.Append(nil)}
	var r Ready
	if err := m.Expect(&r); !errors.Is(err, ErrProtocol) || err.Error() != "handoff: protocol error: expected READY, got FINAL" || r != (Ready{}) {
		t.Errorf("READY expected, FINAL came: %v, %+v", err, r)
	}
	var f Final
	if err := m.Expect(&f); err != nil || f != (Final{Conns: 2, Late: 1}) {
		t.Errorf("FINAL: %+v, %v", f, err)
	}
	if err := (Msg{Type: 99}).ExpectType(TypeCommit); err == nil || !strings.Contains(err.Error(), "got unknown(99)") {
		t.Errorf("unknown type: %v", err)
	}
	if err := m.ExpectType(TypeFinal); err != nil {
		t.Errorf("FINAL's own type: %v", err)
	}
}

// frames returns a zero frame of every type, to decode into.
func frames() []interface {
	Encoder
	Decoder
} {
	return []interface {
		Encoder
		Decoder
	}{
		&Hello{}, &Plan{}, &Conns{}, &Progress{}, new(State), &StateEnd{}, &Ready{}, &Commit{},
		&Abort{}, &Final{}, &Parked{}, &Carry{}, &Serving{}, &Closed{}, &End{},
		&Takeover{}, &Busy{}, &Listeners{}, &Precopy{},
	}
}

// TestEveryType: frames() has one frame of each type, so FuzzFrames
// covers them all.
func TestEveryType(t *testing.T) {
	seen := map[Type]bool{}
	for _, f := range frames() {
		seen[f.Type()] = true
	}
	for ty := TypeHello; ty <= TypePrecopy; ty++ {
		if !seen[ty] || strings.HasPrefix(ty.String(), "unknown") {
			t.Errorf("frame type %d (%s) has no frame", ty, ty)
		}
	}
}

// seeds is a valid frame of every type, and a few near misses.
func seeds() [][]byte {
	good := []Encoder{
		Hello{Version: Version, AppVersion: "v1", App: "example.com/shop/cmd/shopd"},
		Hello{Version: Version, PID: 7, FdLimit: 1024, FdOpen: 9}, // empty names
		Plan{Mode: 1, Early: 300, State: true},
		Plan{Mode: 0, Early: 3, State: true, Precopy: true},
		Precopy{Step: PrecopyLoaded},
		Conns{Seq: 3, Records: []Record{{ID: 1, Kind: "tcp", Unread: []byte("x"), State: []byte("y")}}},
		Parked{Seq: 4, Records: []Record{{ID: 2, Kind: "unix", State: []byte("z")}, {ID: 3}}},
		Progress{Seq: 1, Held: 250},
		State("a chunk of state"),
		StateEnd{Total: 16, CRC: 0xdeadbeef},
		Ready{Conns: 5, StateBytes: 1 << 20},
		Commit{Began: time.Unix(1700000000, 1), Phases: [CommitPhases]time.Duration{1, 2, 3, 4, 5, 6, 7}, Conns: 5, Early: 4, StateBytes: 9},
		Abort{Reason: "no Options.Resume"},
		Final{Conns: 9, Late: 2},
		Carry{Generation: 2, Values: map[string]float64{"app.x": 1, "app.nan": math.NaN()}},
		Serving{},
		Closed{IDs: []uint64{1, 2, 3}},
		End{Moved: 10, Stayed: 1, Closed: 2},
		Takeover{Version: Version, Token: []byte("s3cret")},
		Takeover{Version: Version},
		Busy{Reason: "an upgrade is in progress"},
		Listeners{First: 0, Total: 2, Keys: []string{"tcp 127.0.0.1:8080", "unix /run/x.sock"}},
	}
	var out [][]byte
	for _, f := range good {
		out = append(out, f.Append(nil))
	}
	return append(out, helloV4(), []byte{0, 0, 0, 0, 0x10, 1}, []byte{0, 0, 0, 0})
}

// FuzzFrames: every decoder takes any bytes without panicking; whatever
// one accepts encodes back to a frame that decodes to the same, and, for
// every frame but a HELLO of another version and a CARRY (whose values
// are a map), to the same bytes. A FINAL accepted is consistent.
func FuzzFrames(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, fr := range frames() {
			if fr.Decode(p) != nil {
				continue
			}
			again := reflect.New(reflect.TypeOf(fr).Elem()).Interface().(Decoder)
			b := fr.Append(nil)
			if err := again.Decode(b); err != nil {
				t.Fatalf("%s %+v encodes to %x, which does not decode: %v", fr.Type(), fr, b, err)
			}
			if !sameFrame(fr, again) {
				t.Fatalf("%s does not round-trip: %+v, then %+v", fr.Type(), fr, again)
			}
			if canonical(fr) && !bytes.Equal(b, p) {
				t.Fatalf("%s %+v: decoded from %x, encodes to %x", fr.Type(), fr, p, b)
			}
			if f, ok := fr.(*Final); ok && f.Late > f.Conns {
				t.Fatalf("FINAL accepted with more late connections than connections: %+v", f)
			}
		}
		_, _ = parseHeader(p)
	})
}

// sameFrame compares frames, CARRY's values by their bits (NaN is a value
// a CARRY may carry), and STATE's bytes whether nil or empty.
func sameFrame(a, b any) bool {
	if sa, ok := a.(*State); ok {
		return bytes.Equal(*sa, *b.(*State))
	}
	ca, ok := a.(*Carry)
	if !ok {
		return reflect.DeepEqual(a, b)
	}
	cb := b.(*Carry)
	return ca.Generation == cb.Generation && ca.Start.Equal(cb.Start) &&
		maps.EqualFunc(ca.Values, cb.Values, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) })
}

// canonical reports whether f has one encoding only.
func canonical(f any) bool {
	switch f := f.(type) {
	case *Carry:
		return false
	case *Hello:
		return f.Version == Version
	}
	return true
}

// TestBytesUnchanged: every frame encodes to the bytes protocol version 5
// had before this package existed: the hex strings are what the encoders
// in package handoff made at commit f11cdd4 (READY, PROGRESS and
// STATE_END were encoded by hand in the sessions, as PROTOCOL.md lays
// them out).
func TestBytesUnchanged(t *testing.T) {
	commit := Commit{Began: time.Unix(1700000000, 1), Phases: [CommitPhases]time.Duration{1, 2, 3, 4, 5, 6, 7},
		Conns: 5, Early: 4, StateBytes: 9}
	for _, c := range []struct {
		f   Encoder
		hex string
	}{
		{Hello{Version: 5, PID: 42, FdLimit: 20000, FdOpen: 17, AppVersion: "v2.0.0", App: "shopd"},
			"484f464600050000002a00004e2000000011000676322e302e30000573686f7064"},
		{Plan{Mode: 1, Early: 300, State: true}, "010000012c01"},
		{Conns{Seq: 3, Records: []Record{{ID: 1, Kind: "tcp", Unread: []byte("x"), State: []byte("y")}, {ID: 9}}},
			"0000000300020000000000000001000374637000000001780000000179000000000000000900000000000000000000"},
		{Final{Conns: 9, Late: 2}, "0000000900000002"},
		{Carry{Generation: 2, Start: time.Unix(5, 6), Values: map[string]float64{"b": 1.5, "a": 2}},
			"0000000000000002000000012a05f206000200016140000000000000000001623ff8000000000000"},
		{commit, "17979cfe362a0001000000000000000100000000000000020000000000000003000000000000000400000000000000050000000000000006000000000000000700000005000000040000000000000009"},
		{Closed{IDs: []uint64{1, 2, 3}}, "00000003000000000000000100000000000000020000000000000003"},
		{End{Moved: 10, Stayed: 1, Closed: 2}, "0000000a0000000100000002"},
		{Abort{Reason: "no"}, "00026e6f"},
		{Ready{Conns: 5, StateBytes: 1 << 20}, "000000050000000000100000"},
		{Progress{Seq: 1, Held: 250}, "00000001000000fa"},
		{StateEnd{Total: 16, CRC: 0xdeadbeef}, "0000000000000010deadbeef"},
		{Serving{}, ""},
	} {
		if got := hex.EncodeToString(c.f.Append(nil)); got != c.hex {
			t.Errorf("%s: %s, version 5 says %s", c.f.Type(), got, c.hex)
		}
	}
}
