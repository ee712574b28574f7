package handoff

import (
	"errors"
	"testing"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// decodePlan reads a PLAN payload as the new process does.
func decodePlan(b []byte) (plan, error) {
	var f wire.Plan
	if err := f.Decode(b); err != nil {
		return plan{}, err
	}
	return planOf(f)
}

// TestBadPlansRefused: PLAN's flags say only what the mode allows.
func TestBadPlansRefused(t *testing.T) {
	for name, p := range map[string][]byte{
		"state in listeners-only": {byte(ListenersOnly), 0, 0, 0, 0, 1},
		"early in listeners-only": {byte(ListenersOnly), 0, 0, 0, 1, 0},
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

// TestPlansRoundTrip: every plan a process makes reads back the same, and
// every PLAN a process accepts is one its mode allows (every mode number,
// with and without early connections and state).
func TestPlansRoundTrip(t *testing.T) {
	for _, p := range []plan{{mode: AllAtOnce, early: 3, state: true}, {mode: Rolling}, {mode: ListenersOnly}} {
		if got, err := decodePlan(p.frame().Append(nil)); err != nil || got != p {
			t.Fatalf("plan %+v: %+v, %v", p, got, err)
		}
	}
	for m := 0; m < 256; m++ {
		for _, f := range []wire.Plan{{Mode: uint8(m)}, {Mode: uint8(m), Early: 1}, {Mode: uint8(m), State: true}} {
			p, err := planOf(f)
			if err != nil && f == (wire.Plan{Mode: uint8(m)}) && Mode(m) < modes {
				t.Errorf("PLAN %+v refused: %v", f, err)
			}
			if err == nil && (p.mode >= modes || p.state && !p.mode.sendsState() || p.early > 0 && !p.mode.sendsEarlyFds()) {
				t.Errorf("PLAN %+v accepted as %+v", f, p)
			}
			if err == nil && p.frame() != f {
				t.Errorf("PLAN %+v read as %+v", f, p)
			}
		}
	}
}
