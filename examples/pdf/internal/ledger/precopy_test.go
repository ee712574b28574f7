package ledger

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestPrecopy takes a Track of a ledger and encodes the copy while
// another goroutine changes the ledger under its lock (top-ups, charges,
// replacements, new accounts), as a server does during a pre-copy, then
// moves the changes: the copy read back holds the accounts as they were
// at the Track, and the copy with the changes applied holds every account
// exactly as a map kept beside the ledger says, in schemas 2 and 3.
func TestPrecopy(t *testing.T) {
	for _, schema := range []uint32{Schema2, Schema3} {
		t.Run(fmt.Sprint("schema", schema), func(t *testing.T) { testPrecopy(t, schema) })
	}
}

func testPrecopy(t *testing.T, schema uint32) {
	rng := rand.New(rand.NewPCG(7, uint64(schema)))
	l, model := NewV2(), map[string]Account{}
	for i := range 50000 {
		name := fmt.Sprintf("acct-%d", i)
		a := Account{Balance: rng.Int64N(1000), Charges: rng.Uint64N(5)}
		l.SetAccount(name, a)
		model[name] = a
	}
	var mu sync.Mutex
	records, slots := l.Sizes()
	room := NewRoom(records, slots)
	mu.Lock()
	cp := l.Track(room)
	atTrack := make(map[string]Account, len(model))
	for k, v := range model {
		atTrack[k] = v
	}
	mu.Unlock()

	done := make(chan struct{})
	go func() { // the connections, served meanwhile
		defer close(done)
		for i := range 30000 {
			name := fmt.Sprintf("acct-%d", rng.IntN(60000)) // some new
			mu.Lock()
			switch i % 3 {
			case 0:
				if b, err := l.TopUp(name, 1+rng.Int64N(50)); err == nil {
					a := model[name]
					a.Balance = b
					model[name] = a
				}
			case 1:
				if b, ok := l.Charge(name, 1+rng.Int64N(50)); ok {
					a := model[name]
					a.Balance, a.Charges = b, a.Charges+1
					model[name] = a
				}
			default:
				a := Account{Balance: rng.Int64N(1000), Charges: rng.Uint64N(9)}
				l.SetAccount(name, a)
				model[name] = a
			}
			mu.Unlock()
		}
	}()
	base := load(t, saveAs(t, cp, schema)) // encoded while l changes
	<-done
	checkAccounts(t, "the copy", base, atTrack)

	mu.Lock()
	changes := l.Changed()
	mu.Unlock()
	if changes.Len() == 0 || changes.Len() >= l.Len() {
		t.Fatalf("%d accounts changed of %d: the load did not run, or every account is sent", changes.Len(), l.Len())
	}
	base.Apply(load(t, saveAs(t, changes, schema)))
	checkAccounts(t, "the copy with the changes", base, model)

	l.TopUp("acct-1", 1)
	if l.changes.Tracking() || len(l.changes.Marked()) != 0 {
		t.Fatal("Changed did not stop the tracking")
	}
}

func load(t testing.TB, file []byte) *V2 {
	t.Helper()
	state, _, err := States.Load(bytes.NewReader(file), Schema2)
	if err != nil {
		t.Fatal(err)
	}
	return state.(*V2)
}

func checkAccounts(t testing.TB, what string, l *V2, want map[string]Account) {
	t.Helper()
	if l.Len() != len(want) {
		t.Fatalf("%s: %d accounts, want %d", what, l.Len(), len(want))
	}
	for k, a := range want {
		if got := l.Account(k); got != a {
			t.Fatalf("%s: %s is %+v, want %+v", what, k, got, a)
		}
	}
}

// BenchmarkPrecopy times the parts of a pre-copy of a 1M-account ledger
// that hold the server's lock or fall into the pause, next to the parts
// that run while it serves:
//
//	go -C examples test -run '^$' -bench BenchmarkPrecopy -benchtime 5x ./pdf/internal/ledger/
//
//	room         NewRoom, outside the lock: allocate and touch the copy's memory
//	track        Track into a Room: the copy under the lock
//	encode       the copy as schema 3 (while serving)
//	changes-10k  in the pause: Changed with 10,000 accounts changed (a
//	             second of 10k req/s), schema 3 out, load, Apply
func BenchmarkPrecopy(b *testing.B) {
	const n = 1_000_000
	l := benchLedger(n)
	records, slots := l.Sizes()
	b.Run("room", func(b *testing.B) {
		for b.Loop() {
			NewRoom(records, slots)
		}
	})
	b.Run("track", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			room := NewRoom(records, slots)
			b.StartTimer()
			l.Track(room)
		}
	})
	cp := l.Track(NewRoom(records, slots))
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if err := States.SaveAs(io.Discard, cp, Schema3, 2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("changes-10k", func(b *testing.B) {
		base := load(b, saveAs(b, cp, Schema3))
		for b.Loop() {
			b.StopTimer()
			l.Track(NewRoom(records, slots))
			for i := range 10_000 {
				l.TopUp(fmt.Sprintf("acct-%06d", i*97), 1)
			}
			b.StartTimer()
			var w bytes.Buffer
			if err := States.SaveAs(&w, l.Changed(), Schema3, 2); err != nil {
				b.Fatal(err)
			}
			base.Apply(load(b, w.Bytes()))
		}
	})
}
