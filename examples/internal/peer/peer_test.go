package peer

import (
	"testing"

	"github.com/handoff-dev/handoff/handoff"
)

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		after    string
		idle, ok bool
	}{{"", false, true}, {"exit", false, true}, {"idle", true, true}, {"Idle", false, false}, {"stay", false, false}} {
		t.Setenv(EnvAfterCommit, tc.after)
		t.Setenv(handoff.EnvTakeoverSocket, "/run/handoff/takeover/handoff.sock")
		var opts handoff.Options
		idle, err := FromEnv(&opts)
		if idle != tc.idle || (err == nil) != tc.ok {
			t.Errorf("%s=%q: idle=%v err=%v, want idle=%v ok=%v", EnvAfterCommit, tc.after, idle, err, tc.idle, tc.ok)
		}
		if tc.ok && opts.TakeoverSocket != "/run/handoff/takeover/handoff.sock" {
			t.Errorf("%s=%q: TakeoverSocket %q, want the environment's", EnvAfterCommit, tc.after, opts.TakeoverSocket)
		}
	}
}
