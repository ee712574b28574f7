package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"reflect"
	"slices"
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
	for _, sess := range []session{
		{}, {gw: "gw-1", n: 1}, {gw: "a b\x00c", n: math.MaxUint64},
		{gw: "gw-2", n: 9, changed: map[string]ledger.Account{"alice": {Balance: 5, Charges: 2}, "": {Balance: -1}}},
		{n: 3, changed: map[string]ledger.Account{"bob": {Balance: math.MaxInt64, Charges: math.MaxUint64}}},
	} {
		// Format 1 whenever it will do, so that an older reader takes it.
		b := sess.encode()
		want := byte(sessionFormat1)
		if len(sess.changed) > 0 {
			want = sessionFormat2
		}
		if b[0] != want {
			t.Errorf("%+v encoded in format %d, want %d", sess, b[0], want)
		}
		got, err := decodeSession(b)
		if err != nil || !reflect.DeepEqual(*got, sess) {
			t.Errorf("round trip of %+v = %+v, %v", sess, got, err)
		}
	}
	if got, err := decodeSession(nil); err != nil || !reflect.DeepEqual(*got, session{}) {
		t.Errorf("no state = %+v, %v; want a fresh session", got, err)
	}
	// What the format 1 encoder of the previous versions wrote.
	if got, err := decodeSession([]byte{1, 0x85, 0x01, 'g', 'w'}); err != nil || got.n != 133 || got.gw != "gw" {
		t.Errorf("format 1 = %+v, %v; want n 133, gw \"gw\"", got, err)
	}
	full := (&session{gw: "g", n: 1, changed: map[string]ledger.Account{"a": {Balance: 1}, "b": {Balance: 2}}}).encode()
	for _, bad := range [][]byte{
		{3, 0}, {sessionFormat1}, {sessionFormat1, 0x80},
		{sessionFormat2, 1, 5, 'g'},                           // a name longer than what is left
		{sessionFormat2, 1, 0, 0xff},                          // a count cut short
		{sessionFormat2, 1, 0, 9, 1},                          // nine accounts claimed, less than one there
		append(slices.Clone(full), 0),                         // a byte after the last field
		full[:len(full)-1],                                    // the last field cut short
		{sessionFormat2, 0, 0, 2, 1, 'a', 2, 0, 1, 'a', 4, 0}, // an account twice
	} {
		if _, err := decodeSession(bad); !errors.Is(err, errSession) {
			t.Errorf("decodeSession(%v) = %v, want errSession", bad, err)
		}
	}
}

// park is what the handler gives Park for sess, and resume what the new
// process's Resume does with it before serving.
func park(sess *session) []byte { return sess.encode() }

func resume(t *testing.T, s *Server, state []byte) *session {
	t.Helper()
	sess, err := decodeSession(state)
	if err != nil {
		t.Fatal(err)
	}
	s.adopt(sess)
	return sess
}

// TestRollingCarry plays a rolling upgrade with the library left out: the
// old server's snapshot is taken while its connections are served, and
// each connection carries to the new server what it changed, including
// what the snapshot missed, across two upgrades (v1 to v2 to v2). A
// connection that changed nothing carries nothing, in format 1.
func TestRollingCarry(t *testing.T) {
	old := New("v1.0.0", ledger.NewV1(), quiet())
	old.RollingUpgrades()
	a, b, idle := old.newSession(), old.newSession(), old.newSession()
	exchange(t, old, a, [][2]string{{"TOPUP r1 alice 100", "OK r1 100"}, {"CHARGE r2 alice 10", "OK r2 90"}})
	exchange(t, old, b, [][2]string{{"TOPUP r1 bob 5", "OK r1 5"}})
	exchange(t, old, idle, [][2]string{{"BALANCE r1 alice", "BAL r1 90"}, {"CHARGE r2 carol 1", "DENY r2 0"}})
	var snap bytes.Buffer
	if err := old.SaveState(&snap); err != nil {
		t.Fatal(err)
	}
	// After the snapshot, before the connections move.
	exchange(t, old, a, [][2]string{{"CHARGE r3 alice 20", "OK r3 70"}, {"TOPUP r4 dave 3", "OK r4 3"}})
	if state := park(idle); state[0] != sessionFormat1 {
		t.Errorf("a session that changed nothing parks in format %d, want 1", state[0])
	}

	next := New("v2.0.0", ledger.NewV2(), quiet())
	next.RollingUpgrades()
	if err := next.LoadState(&snap); err != nil {
		t.Fatal(err)
	}
	ra := resume(t, next, park(a))
	exchange(t, next, ra, [][2]string{{"STATS r5 alice", "STATS r5 70 2"}, {"BALANCE r6 dave", "BAL r6 3"}})
	// b moves late, having topped up again in the old process.
	exchange(t, old, b, [][2]string{{"TOPUP r2 bob 1", "OK r2 6"}})
	rb := resume(t, next, park(b))
	exchange(t, next, rb, [][2]string{{"STATS r3 bob", "STATS r3 6 0"}, {"WHOAMI r4", "YOU r4 - 3"}})

	// The second upgrade's snapshot is taken before a has charged again:
	// what a carried in from the first stays in its session.
	snap.Reset()
	if err := next.SaveState(&snap); err != nil {
		t.Fatal(err)
	}
	exchange(t, next, ra, [][2]string{{"CHARGE r7 alice 1", "OK r7 69"}})
	last := New("v2.0.0", ledger.NewV2(), quiet())
	last.RollingUpgrades()
	if err := last.LoadState(&snap); err != nil {
		t.Fatal(err)
	}
	resume(t, last, park(ra))
	resume(t, last, park(rb))
	exchange(t, last, last.newSession(), [][2]string{
		{"STATS r1 alice", "STATS r1 69 3"}, {"STATS r2 bob", "STATS r2 6 0"}, {"BALANCE r3 dave", "BAL r3 3"},
	})
}

// A server that does not carry changes applies what a connection carried
// in, then forgets it: at its own next upgrade (all at once, with every
// change in the snapshot) it must not send those older values again.
func TestCarryEndsWithoutRolling(t *testing.T) {
	s := New("v2.0.0", ledger.NewV2(), quiet())
	carried := &session{n: 1, changed: map[string]ledger.Account{"alice": {Balance: 5}}}
	sess := resume(t, s, carried.encode())
	exchange(t, s, sess, [][2]string{{"TOPUP r1 alice 1", "OK r1 6"}})
	if sess.changed != nil || park(sess)[0] != sessionFormat1 {
		t.Fatalf("session %+v still carries accounts", sess)
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

// blockedWriter stands in for a new process slow to read the state: its
// first Write waits until released.
type blockedWriter struct {
	bytes.Buffer
	entered, release chan struct{}
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	if w.entered != nil {
		close(w.entered)
		w.entered = nil
		<-w.release
	}
	return w.Buffer.Write(p)
}

// With RollingUpgrades, SaveState runs while connections are served: it
// must not hold the ledger while the new process reads the snapshot, and
// the snapshot is the ledger as it was when SaveState began.
func TestRollingSaveStateUnlocked(t *testing.T) {
	s := New("v2.0.0", ledger.NewV2(), quiet())
	s.RollingUpgrades()
	exchange(t, s, s.newSession(), [][2]string{{"TOPUP r1 a 5", "OK r1 5"}})
	entered := make(chan struct{})
	w := &blockedWriter{entered: entered, release: make(chan struct{})}
	saved := make(chan error)
	go func() { saved <- s.SaveState(w) }()
	<-entered
	exchange(t, s, s.newSession(), [][2]string{{"TOPUP r2 a 1", "OK r2 6"}})
	close(w.release)
	if err := <-saved; err != nil {
		t.Fatal(err)
	}
	v, _, err := ledger.States.Load(&w.Buffer, ledger.Schema2)
	if err != nil || v.(*ledger.V2).Balance("a") != 5 {
		t.Fatalf("snapshot %+v, %v; want a at 5", v, err)
	}
}
