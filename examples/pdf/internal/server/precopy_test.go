package server

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
)

// A pre-copy from one server to another: requests served while the
// bulk is being written (the writer holds it until they are answered,
// so they fall after the copy) reach the new server through the changes,
// which it applies to the bulk: every balance and charge count as the
// old server acknowledged it, in schemas 2 and 3.
func TestPrecopy(t *testing.T) {
	for _, schema := range []uint32{ledger.Schema2, ledger.Schema3} {
		old := New("v2.0.0", ledger.NewV2(), quiet())
		exchange(t, old, old.newSession(), [][2]string{
			{"TOPUP r1 a 50", "OK r1 50"}, {"TOPUP r2 b 7", "OK r2 7"}, {"TOPUP r3 c 1", "OK r3 1"},
		})
		entered := make(chan struct{})
		w := &blockedWriter{entered: entered, release: make(chan struct{})}
		saved := make(chan error)
		go func() { saved <- old.PrecopySave(w, schema) }()
		<-entered // the copy is taken; the server serves on
		exchange(t, old, old.newSession(), [][2]string{
			{"CHARGE r4 a 20", "OK r4 30"}, {"TOPUP r5 d 9", "OK r5 9"},
		})
		close(w.release)
		if err := <-saved; err != nil {
			t.Fatal(err)
		}
		var changes bytes.Buffer
		if err := old.SaveChanges(&changes, schema); err != nil {
			t.Fatal(err)
		}

		nu := New("v2.0.1", ledger.NewV2(), quiet())
		if err := nu.PreloadState(&w.Buffer); err != nil {
			t.Fatal(err)
		}
		exchange(t, nu, nu.newSession(), [][2]string{{"BALANCE r6 a", "BAL r6 0"}}) // not served before the changes
		if err := nu.LoadChanges(&changes); err != nil {
			t.Fatal(err)
		}
		exchange(t, nu, nu.newSession(), [][2]string{
			{"STATS r7 a", "STATS r7 30 1"}, {"STATS r8 b", "STATS r8 7 0"},
			{"STATS r9 c", "STATS r9 1 0"}, {"STATS r10 d", "STATS r10 9 0"},
		})
		if nu.gen != old.gen+1 {
			t.Fatalf("generation %d after a pre-copy from generation %d", nu.gen, old.gen)
		}
	}
}

// Changes that do not belong to the bulk the new server holds, or come
// without one, are refused and change nothing; so are damaged ones.
func TestLoadChangesRefuses(t *testing.T) {
	old := New("v2.0.0", ledger.NewV2(), quiet())
	exchange(t, old, old.newSession(), [][2]string{{"TOPUP r1 a 5", "OK r1 5"}})
	var bulk, changes bytes.Buffer
	if err := old.PrecopySave(&bulk, ledger.Schema3); err != nil {
		t.Fatal(err)
	}
	exchange(t, old, old.newSession(), [][2]string{{"TOPUP r2 a 5", "OK r2 10"}})
	if err := old.SaveChanges(&changes, ledger.Schema3); err != nil {
		t.Fatal(err)
	}

	nu := New("v2.0.1", ledger.NewV2(), quiet())
	if err := nu.LoadChanges(bytes.NewReader(changes.Bytes())); err == nil || !strings.Contains(err.Error(), "without the ledger") {
		t.Fatalf("changes without a bulk: %v", err)
	}
	if err := nu.PreloadState(bytes.NewReader(bulk.Bytes())); err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(changes.Bytes())
	damaged[len(damaged)-10] ^= 0xff
	if err := nu.LoadChanges(bytes.NewReader(damaged)); err == nil {
		t.Fatal("damaged changes loaded")
	}
	old.gen = 7 // a later upgrade's changes
	var later bytes.Buffer
	if err := old.SaveChanges(&later, ledger.Schema3); err != nil {
		t.Fatal(err)
	}
	if err := nu.LoadChanges(&later); err == nil || !strings.Contains(err.Error(), "generation") {
		t.Fatalf("changes of another generation: %v", err)
	}
	exchange(t, nu, nu.newSession(), [][2]string{{"BALANCE r3 a", "BAL r3 0"}})
	if err := nu.LoadChanges(bytes.NewReader(changes.Bytes())); err != nil {
		t.Fatal(err)
	}
	exchange(t, nu, nu.newSession(), [][2]string{{"BALANCE r4 a", "BAL r4 10"}})

	v1 := New("v1.0.0", ledger.NewV1(), quiet())
	if err := v1.PrecopySave(io.Discard, ledger.Schema2); err == nil {
		t.Fatal("a v1 ledger pre-copied")
	}
}
