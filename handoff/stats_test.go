package handoff

import (
	"testing"
	"time"
)

// TestPauseByMode: only AllAtOnce pauses every connection; Pause is 0 for
// the other modes, whatever their phases took, and the pre-copy, before
// the park, is never in it.
func TestPauseByMode(t *testing.T) {
	st := UpgradeStats{Park: 1, Parked: 2, State: 4, Ready: 8, Commit: 16, Move: time.Second, Precopy: time.Minute}
	for mode, want := range map[Mode]time.Duration{AllAtOnce: 31, Rolling: 0, ListenersOnly: 0} {
		st.Mode = mode
		if got := st.Pause(); got != want {
			t.Errorf("%s: Pause %d, want %d", mode, got, want)
		}
	}
}

// TestTookNamesEveryPhase: every name in Phases reads its own field, and
// a name that is not a phase reads 0.
func TestTookNamesEveryPhase(t *testing.T) {
	st := UpgradeStats{Mode: AllAtOnce, Connected: 1, Fds: 2, Park: 4, Parked: 8, State: 16, Ready: 32,
		Commit: 64, Release: 128, Move: 256, Precopy: 512}
	want := map[string]time.Duration{PhaseConnected: 1, PhaseFds: 2, PhasePrecopy: 512, PhasePark: 4, PhaseParked: 8, PhaseState: 16,
		PhaseReady: 32, PhaseCommit: 64, PhaseRelease: 128, PhaseMove: 256, PhasePause: st.Pause()}
	if len(Phases) != len(want) {
		t.Fatalf("Phases %v, want the %d of %v", Phases, len(want), want)
	}
	for _, p := range Phases {
		if got, ok := want[p]; !ok || st.Took(p) != got {
			t.Errorf("Took(%q) = %d, want %d", p, st.Took(p), got)
		}
	}
	for _, p := range []string{PhaseStarted, PhaseCommitted, "start", "adopt"} {
		if got := st.Took(p); got != 0 {
			t.Errorf("Took(%q) = %d, want 0: no phase UpgradeStats times", p, got)
		}
	}
}
