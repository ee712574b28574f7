package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/statefile"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// exchange sends each request on one session and checks each reply.
func exchange(t *testing.T, s *Server, sess *session, script [][2]string) {
	t.Helper()
	for _, step := range script {
		got := string(s.handle(sess, []byte(step[0])))
		if got != step[1]+"\n" {
			t.Errorf("%q: got %q, want %q", step[0], got, step[1])
		}
	}
}

func TestHandle(t *testing.T) {
	for _, tc := range []struct {
		version string
		led     Ledger
	}{{"v1.0.0", ledger.NewV1()}, {"v2.0.0", ledger.NewV2()}} {
		s := New(tc.version, tc.led, quiet())
		exchange(t, s, &session{}, [][2]string{
			{"WHOAMI w0", "YOU w0 - 0"},
			{"HELLO gw7", "WELCOME gw7"},
			{"TOPUP r1 alice 100", "OK r1 100"},
			{"CHARGE r2 alice 30", "OK r2 70"},
			{"CHARGE r3 alice 71", "DENY r3 70"},
			{"BALANCE r4 alice", "BAL r4 70"},
			{"BALANCE r5 nobody", "BAL r5 0"},
			{"CHARGE r6 nobody 1", "DENY r6 0"},
			{"TOPUP r7 alice 0", "ERR r7 bad-amount"},
			{"", "ERR - empty-line"},
			{"NOPE r8", "ERR r8 unknown-command"},
			{"WHOAMI w1", "YOU w1 gw7 11"},
			{"VERSION r9", fmt.Sprintf("VERSION r9 %s %d", tc.version, s.pid)},
			{"WHOAMI w2", "YOU w2 gw7 13"},
		})
	}
}

func TestStats(t *testing.T) {
	s1 := New("v1.0.0", ledger.NewV1(), quiet())
	exchange(t, s1, &session{}, [][2]string{
		{"STATS r1 alice", "ERR r1 unknown-command"},
		{"STATS", "ERR - unknown-command"},
	})
	s2 := New("v2.0.0", ledger.NewV2(), quiet())
	exchange(t, s2, &session{}, [][2]string{
		{"STATS r1 alice", "STATS r1 0 0"},
		{"TOPUP r2 alice 10", "OK r2 10"},
		{"CHARGE r3 alice 4", "OK r3 6"},
		{"CHARGE r4 alice 7", "DENY r4 6"}, // a denied charge is not counted
		{"CHARGE r5 alice 6", "OK r5 0"},
		{"STATS r6 alice", "STATS r6 0 2"},
		{"STATS r7", "ERR r7 bad-args"},
	})
}

func TestOverflow(t *testing.T) {
	s := New("v2.0.0", ledger.NewV2(), quiet())
	// Reaching the top through the protocol takes 9 million requests.
	s.led.TopUp("a", math.MaxInt64-5)
	exchange(t, s, &session{}, [][2]string{
		{"TOPUP r1 a 6", "ERR r1 overflow"},
		{"BALANCE r2 a", fmt.Sprintf("BAL r2 %d", int64(math.MaxInt64-5))},
		{"TOPUP r3 a 5", fmt.Sprintf("OK r3 %d", int64(math.MaxInt64))},
		{"TOPUP r4 a 1", "ERR r4 overflow"},
		{"CHARGE r5 a 1000000000000", fmt.Sprintf("OK r5 %d", int64(math.MaxInt64-1_000_000_000_000))},
	})
}

// The charge counts v1 keeps survive an upgrade to v2 and a rollback to v1.
func TestStateAcrossVersions(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	v1 := New("v1.0.0", ledger.NewV1(), log)
	exchange(t, v1, &session{}, [][2]string{
		{"TOPUP r1 alice 100", "OK r1 100"},
		{"CHARGE r2 alice 1", "OK r2 99"},
		{"CHARGE r3 alice 1", "OK r3 98"},
	})
	var snap bytes.Buffer
	if err := v1.SaveState(&snap); err != nil {
		t.Fatal(err)
	}
	v2 := New("v2.0.0", ledger.NewV2(), log)
	if err := v2.LoadState(&snap); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "schema=1 migrated_to=2 generation=1") {
		t.Errorf("no migration logged: %s", logs.String())
	}
	exchange(t, v2, &session{}, [][2]string{
		{"CHARGE r4 alice 8", "OK r4 90"},
		{"STATS r5 alice", "STATS r5 90 3"},
	})
	snap.Reset()
	if err := v2.SaveState(&snap); err != nil {
		t.Fatal(err)
	}
	back := New("v1.0.0", ledger.NewV1(), log)
	if err := back.LoadState(&snap); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "schema=2 migrated_to=1 generation=2") {
		t.Errorf("no migration logged: %s", logs.String())
	}
	exchange(t, back, &session{}, [][2]string{{"BALANCE r6 alice", "BAL r6 90"}})
	snap.Reset()
	back.SaveState(&snap)
	again := New("v2.0.0", ledger.NewV2(), log)
	again.LoadState(&snap)
	exchange(t, again, &session{}, [][2]string{{"STATS r7 alice", "STATS r7 90 3"}})
}

func TestLoadStateRefusesGarbage(t *testing.T) {
	s := New("v2.0.0", ledger.NewV2(), quiet())
	s.handle(&session{}, []byte("TOPUP r a 5"))
	if err := s.LoadState(strings.NewReader(statefile.Magic + "garbage")); err == nil {
		t.Fatal("LoadState accepted garbage")
	}
	exchange(t, s, &session{}, [][2]string{{"BALANCE r a", "BAL r 5"}})
}

func TestSession(t *testing.T) {
	for _, sess := range []session{{}, {gw: "gw-1", n: 1}, {gw: "a b\x00c", n: math.MaxUint64}} {
		got, err := decodeSession(sess.encode())
		if err != nil || *got != sess {
			t.Errorf("round trip of %+v = %+v, %v", sess, got, err)
		}
	}
	if got, err := decodeSession(nil); err != nil || *got != (session{}) {
		t.Errorf("no state = %+v, %v; want a fresh session", got, err)
	}
	for _, bad := range [][]byte{{2, 0}, {sessionFormat}, {sessionFormat, 0x80}} {
		if _, err := decodeSession(bad); err == nil {
			t.Errorf("decodeSession(%v) accepted", bad)
		}
	}
}

// A final save that fails leaves the server serving; one that succeeds
// leaves the ledger locked, so nothing changes after the snapshot.
func TestFinalSave(t *testing.T) {
	s := New("v2.0.0", ledger.NewV2(), quiet())
	exchange(t, s, &session{}, [][2]string{{"TOPUP r1 a 5", "OK r1 5"}})
	full := errors.New("no space left on device")
	err := s.FinalSave(func(write func(io.Writer) error) error {
		write(io.Discard)
		return full
	})
	if err != full {
		t.Fatalf("FinalSave = %v, want the save's error", err)
	}
	exchange(t, s, &session{}, [][2]string{{"TOPUP r2 a 1", "OK r2 6"}})

	var snap bytes.Buffer
	if err := s.FinalSave(func(write func(io.Writer) error) error { return write(&snap) }); err != nil {
		t.Fatal(err)
	}
	if s.mu.TryLock() {
		t.Fatal("the ledger is not locked after a final save")
	}
	v, _, err := ledger.States.Load(&snap, ledger.Schema2)
	if err != nil || v.(*ledger.V2).Balance("a") != 6 {
		t.Fatalf("saved %+v, %v; want a at 6", v, err)
	}
}
