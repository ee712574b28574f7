package handoff

import (
	"testing"
	"time"
)

// TestPauseByMode: only AllAtOnce pauses every connection; Pause is 0 for
// the other modes, whatever their phases took.
func TestPauseByMode(t *testing.T) {
	st := UpgradeStats{Park: 1, Parked: 2, State: 4, Ready: 8, Commit: 16, Move: time.Second}
	for mode, want := range map[Mode]time.Duration{AllAtOnce: 31, Rolling: 0, ListenersOnly: 0} {
		st.Mode = mode
		if got := st.Pause(); got != want {
			t.Errorf("%s: Pause %d, want %d", mode, got, want)
		}
	}
}
