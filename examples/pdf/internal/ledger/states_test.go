package ledger

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"testing"

	"github.com/handoff-dev/handoff/statefile"
)

func save(t testing.TB, l any, gen uint64) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := States.Save(&b, l, gen); err != nil {
		t.Fatalf("Save(%T): %v", l, err)
	}
	return b.Bytes()
}

// Every schema loads as every schema, through the registered migrations,
// with every balance and charge count intact.
func TestRoundTrip(t *testing.T) {
	v1 := sampleV1()
	v2 := Up1to2(v1)
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"schema 1 as 1", v1, v1},
		{"schema 1 as 2", v1, v2},
		{"schema 2 as 2", v2, v2},
		{"schema 2 as 1", v2, v1},
		{"empty 1 as 2", NewV1(), NewV2()},
		{"empty 2 as 1", NewV2(), NewV1()},
	}
	for _, tt := range tests {
		want, _ := States.SchemaOf(tt.want)
		got, h, err := States.Load(bytes.NewReader(save(t, tt.in, 7)), want)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(accounts(got), accounts(tt.want)) {
			t.Errorf("%s: got %+v, want %+v", tt.name, accounts(got), accounts(tt.want))
		}
		if from, _ := States.SchemaOf(tt.in); h.App != "pdf" || h.Schema != from || h.Generation != 7 {
			t.Errorf("%s: header %+v", tt.name, h)
		}
	}
}

// Migrations build a new ledger and leave their argument alone, as
// statefile requires.
func TestMigrationsKeepTheirInput(t *testing.T) {
	v1 := sampleV1()
	Up1to2(v1).TopUp("alice", 1)
	if !reflect.DeepEqual(v1, sampleV1()) {
		t.Fatal("Up1to2 changed its input, or the result shares memory with it")
	}
	v2 := Up1to2(sampleV1())
	Down2to1(v2).TopUp("bob", 1)
	if !reflect.DeepEqual(accounts(v2), accounts(Up1to2(sampleV1()))) {
		t.Fatal("Down2to1 changed its input, or the result shares memory with it")
	}
}

// sealed writes a schema 2 file whose one section holds count and recs,
// with valid checksums, so that the test reaches the ledger's own checks.
func sealed(t *testing.T, count uint64, recs []accountRec) []byte {
	var b bytes.Buffer
	w, err := statefile.NewWriter(&b, statefile.Header{App: "pdf", Schema: Schema2})
	if err != nil {
		t.Fatal(err)
	}
	w.Section("accounts")
	enc := gob.NewEncoder(w)
	if err := enc.Encode(count); err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(recs); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A checksum proves the bytes are what was written, not that the writer
// was right: an account twice or a negative balance is refused too.
func TestLoadRefusesBadContent(t *testing.T) {
	for name, file := range map[string][]byte{
		"duplicate":       sealed(t, 2, []accountRec{{"a", 1, 0}, {"a", 2, 0}}),
		"negative":        sealed(t, 1, []accountRec{{"a", -1, 0}}),
		"count too small": sealed(t, 1, []accountRec{{"a", 1, 0}, {"b", 2, 0}}),
		"count too large": sealed(t, 3, []accountRec{{"a", 1, 0}, {"b", 2, 0}}),
		"count of 2^64-1": sealed(t, math.MaxUint64, []accountRec{{"a", 1, 0}}),
	} {
		for _, want := range []uint32{Schema1, Schema2} {
			_, _, err := States.Load(bytes.NewReader(file), want)
			if !errors.Is(err, statefile.ErrCorrupt) {
				t.Errorf("%s as schema %d: err = %v, want ErrCorrupt", name, want, err)
			}
		}
	}
	if _, _, err := States.Load(bytes.NewReader(sealed(t, 1, []accountRec{{"a", 1, 2}})), Schema1); err != nil {
		t.Fatalf("a good file is refused: %v", err)
	}
}

// Every truncation of a real file is refused, whatever schema is asked for.
func TestLoadRefusesTruncated(t *testing.T) {
	for _, l := range []any{sampleV1(), Up1to2(sampleV1())} {
		good := save(t, l, 1)
		for i := range len(good) {
			for _, want := range []uint32{Schema1, Schema2} {
				if _, _, err := States.Load(bytes.NewReader(good[:i]), want); !errors.Is(err, statefile.ErrCorrupt) {
					t.Fatalf("%T truncated to %d of %d, as %d: err = %v, want ErrCorrupt", l, i, len(good), want, err)
				}
			}
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add(save(f, sampleV1(), 1))
	f.Add(save(f, Up1to2(sampleV1()), 2))
	f.Add(saveAs(f, sampleV1(), Schema3))
	f.Fuzz(func(t *testing.T, file []byte) {
		l, _, err := States.Load(bytes.NewReader(file), Schema2)
		if err != nil {
			return
		}
		// Whatever loads must survive a trip down to schema 1 and back.
		back, _, err := States.Load(bytes.NewReader(save(t, l, 0)), Schema1)
		if err != nil {
			t.Fatalf("a loaded ledger does not load as schema 1: %v", err)
		}
		if !reflect.DeepEqual(accounts(Up1to2(back.(*V1))), accounts(l)) {
			t.Fatal("a loaded ledger changed on its way down and up")
		}
		// And through schema 3, whose layout depends on the index.
		packed, _, err := States.Load(bytes.NewReader(saveAs(t, l, Schema3)), Schema2)
		if err != nil {
			t.Fatalf("a loaded ledger does not load from schema 3: %v", err)
		}
		if !reflect.DeepEqual(accounts(packed), accounts(l)) {
			t.Fatal("a loaded ledger changed through schema 3")
		}
	})
}

// bigV1 has n accounts, many with zero balances or no charges, so that
// zero values follow non-zero ones within and across codec batches.
func bigV1(n int) *V1 {
	l := NewV1()
	for i := range n {
		acct := fmt.Sprintf("acct-%d", i)
		l.TopUp(acct, int64(i%7+1)*100)
		for range i % 3 {
			l.Charge(acct, 50)
		}
		if i%5 == 0 {
			l.Charge(acct, l.Balance(acct)) // balance 0
		}
	}
	return l
}

func TestRoundTripMany(t *testing.T) {
	v1 := bigV1(3*batch + 17)
	v2 := Up1to2(v1)
	for _, tt := range []struct{ in, want any }{{v1, v1}, {v1, v2}, {v2, v2}, {v2, v1}} {
		want, _ := States.SchemaOf(tt.want)
		got, _, err := States.Load(bytes.NewReader(save(t, tt.in, 0)), want)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(accounts(got), accounts(tt.want)) {
			t.Fatalf("%T as schema %d: the ledger changed on the way", tt.in, want)
		}
	}
}

// accounts is what a ledger holds, to compare two by: a V2's record
// order, seed and index are how it holds them, not what.
func accounts(l any) any {
	if p, ok := l.(*Packed); ok {
		l = p.l
	}
	if v2, ok := l.(*V2); ok {
		checkIndex(v2)
		return maps.Collect(v2.All())
	}
	return l
}
