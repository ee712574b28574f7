//go:build linux

package handoff

import (
	"testing"
	"time"
)

// TestMayAsk: the move asks another wave only while few connections are
// asked and not yet taken up by the new process. Before, a timer alone
// asked a wave every 5 ms, and at 15k connections parked ones queued behind
// thousands of others (a request's longest stall 152 ms against 64 ms).
// Connections busy with a request do not hold the waves up, parked ones
// waiting to be sent or taken up do.
func TestMayAsk(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		here, queued, unacked int
		since                 time.Duration
		want                  bool
	}{
		{"nothing in flight", 0, 0, 0, 0, true},
		{"one wave asked", moveWave, 0, 0, 0, true},
		{"two waves asked", 2 * moveWave, 0, 0, 0, false},
		{"one asked, one not taken up", moveWave, 0, moveWave, 0, false},
		{"taken up", moveWave, 0, moveWave - 1, 0, true},
		{"busy ones, later", 2 * moveWave, 0, 0, waveEvery, true},
		{"busy ones, not yet", 2 * moveWave, 0, 0, waveEvery - 1, false},
		{"parked ones queued, later", 2 * moveWave, moveWave, 0, time.Second, false},
		{"parked ones not taken up, later", 2 * moveWave, 0, moveWave, time.Second, false},
		{"a few parked, later", 2 * moveWave, moveWave / 2, moveWave/2 - 1, waveEvery, true},
	} {
		if got := mayAsk(tc.here, tc.queued, tc.unacked, tc.since); got != tc.want {
			t.Errorf("%s: mayAsk(%d, %d, %d, %s) = %v", tc.name, tc.here, tc.queued, tc.unacked, tc.since, got)
		}
	}
}

// TestMoveMaxWait: a connection's wait runs from its park until the new
// process acknowledged its frame (it serves the connection then), not
// until the frame was sent, and the frames acknowledged are forgotten.
func TestMoveMaxWait(t *testing.T) {
	m := &mover{link: &link{}}
	now := time.Now()
	m.inFlight = []sentFrame{
		{seq: 0, conns: 3, oldest: now.Add(-40 * time.Millisecond)},
		{seq: 1, conns: 2, oldest: now.Add(-time.Hour)},
	}
	m.unacked = 5
	m.noteAcked()
	if m.maxWait != 0 || m.unacked != 5 || len(m.inFlight) != 2 {
		t.Fatalf("nothing acknowledged: maxWait %s, unacked %d, %d frames", m.maxWait, m.unacked, len(m.inFlight))
	}
	m.acked = 1
	m.noteAcked()
	if m.maxWait < 40*time.Millisecond || m.maxWait > time.Minute || m.unacked != 2 || len(m.inFlight) != 1 {
		t.Fatalf("frame 0 acknowledged: maxWait %s, unacked %d, %d frames", m.maxWait, m.unacked, len(m.inFlight))
	}
}
