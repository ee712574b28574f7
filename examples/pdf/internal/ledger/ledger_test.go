package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"reflect"
	"runtime"
	"testing"
)

func TestV1(t *testing.T) {
	l := NewV1()
	if b, err := l.TopUp("a", 100); b != 100 || err != nil {
		t.Fatalf("TopUp = %d, %v", b, err)
	}
	if b, ok := l.Charge("a", 30); b != 70 || !ok {
		t.Fatalf("Charge = %d, %v", b, ok)
	}
	if b, ok := l.Charge("a", 71); b != 70 || ok {
		t.Fatalf("Charge over balance = %d, %v; want 70, false", b, ok)
	}
	if b, ok := l.Charge("nobody", 1); b != 0 || ok {
		t.Fatalf("Charge unknown = %d, %v", b, ok)
	}
	if l.Balance("a") != 70 || l.Balance("nobody") != 0 {
		t.Fatalf("balances %v", l.balances)
	}
	if l.charges["a"] != 1 {
		t.Fatalf("charges = %v, want a:1", l.charges)
	}
}

func TestV2(t *testing.T) {
	l := NewV2()
	l.TopUp("a", 100)
	l.Charge("a", 30)
	l.Charge("a", 30)
	if b, ok := l.Charge("a", 41); b != 40 || ok {
		t.Fatalf("Charge over balance = %d, %v; want 40, false", b, ok)
	}
	if b, n := l.Stats("a"); b != 40 || n != 2 {
		t.Fatalf("Stats = %d, %d; want 40, 2", b, n)
	}
	if b, n := l.Stats("nobody"); b != 0 || n != 0 {
		t.Fatalf("Stats unknown = %d, %d", b, n)
	}
	if _, ok := l.Charge("nobody", 1); ok || len(l.accounts) != 1 {
		t.Fatalf("charging an unknown account created it")
	}
}

func TestOverflow(t *testing.T) {
	for _, l := range []interface {
		TopUp(string, int64) (int64, error)
		Balance(string) int64
	}{NewV1(), NewV2()} {
		l.TopUp("a", math.MaxInt64-5)
		if b, err := l.TopUp("a", 6); !errors.Is(err, ErrOverflow) || b != math.MaxInt64-5 {
			t.Fatalf("%T: TopUp over max = %d, %v", l, b, err)
		}
		if b, err := l.TopUp("a", 5); err != nil || b != math.MaxInt64 {
			t.Fatalf("%T: TopUp to max = %d, %v", l, b, err)
		}
		if l.Balance("a") != math.MaxInt64 {
			t.Fatalf("%T: balance %d", l, l.Balance("a"))
		}
	}
}

func sampleV1() *V1 {
	l := NewV1()
	l.TopUp("alice", 1000)
	l.Charge("alice", 10)
	l.Charge("alice", 10)
	l.TopUp("bob", 5)
	l.TopUp("carol", math.MaxInt64)
	l.Charge("carol", math.MaxInt64) // balance 0, one charge
	l.TopUp("", 1)                   // the codec does not care what a name is
	return l
}

func TestUpDownPreserves(t *testing.T) {
	v1 := sampleV1()
	v2 := Up1to2(v1)
	for k := range v1.balances {
		b, n := v2.Stats(k)
		if b != v1.balances[k] || n != v1.charges[k] {
			t.Errorf("%q: v2 has %d, %d; v1 has %d, %d", k, b, n, v1.balances[k], v1.charges[k])
		}
	}
	if back := Down2to1(v2); !reflect.DeepEqual(back, v1) {
		t.Fatalf("Down2to1(Up1to2(v1)) = %+v, want %+v", back, v1)
	}
}

// loader is what both layouts offer for snapshots.
type loader interface {
	Load(r io.Reader) (uint16, error)
	Save(w io.Writer) error
}

// snapshot saves l; writing to a bytes.Buffer cannot fail.
func snapshot(l loader) []byte {
	var b bytes.Buffer
	l.Save(&b)
	return b.Bytes()
}

// Every snapshot loads into every layout, migrating as needed.
func TestRoundTrip(t *testing.T) {
	v1 := sampleV1()
	v2 := Up1to2(v1)
	s1, s2 := snapshot(v1), snapshot(v2)
	tests := []struct {
		name string
		snap []byte
		from uint16
		into loader
		want loader
	}{
		{"v1 from schema 1", s1, Schema1, NewV1(), v1},
		{"v1 from schema 2", s2, Schema2, NewV1(), v1},
		{"v2 from schema 2", s2, Schema2, NewV2(), v2},
		{"v2 from schema 1", s1, Schema1, NewV2(), v2},
		{"empty v1", snapshot(NewV1()), Schema1, NewV2(), NewV2()},
		{"empty v2", snapshot(NewV2()), Schema2, NewV1(), NewV1()},
	}
	for _, tt := range tests {
		from, err := tt.into.Load(bytes.NewReader(tt.snap))
		if err != nil || from != tt.from {
			t.Errorf("%s: Load = %d, %v; want %d, nil", tt.name, from, err, tt.from)
			continue
		}
		if !reflect.DeepEqual(tt.into, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, tt.into, tt.want)
		}
		// Saving again gives the same bytes: the snapshot is deterministic.
		if again := snapshot(tt.want); !bytes.Equal(snapshot(tt.into), again) {
			t.Errorf("%s: snapshots differ after a round trip", tt.name)
		}
	}
}

// seal wraps body in the container with a valid checksum, so that the test
// reaches the body validation.
func seal(schema uint16, body []byte) []byte {
	b := binary.BigEndian.AppendUint16([]byte(magic), schema)
	b = append(b, body...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

func TestLoadRefusesCorrupt(t *testing.T) {
	good := snapshot(sampleV1())
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	u32 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	u64 := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name string
		snap []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("XDFS"), good[4:]...)},
		{"bit flip", flipped},
		{"unknown schema", seal(3, u32(0))},
		{"huge count", seal(Schema2, u32(math.MaxUint32))},
		{"count beyond input", seal(Schema2, cat(u32(2), u32(1), []byte("a"), u64(1), u64(1)))},
		{"huge string", seal(Schema2, cat(u32(1), u32(math.MaxUint32), u64(0), u64(0), u64(0)))},
		{"negative balance", seal(Schema2, cat(u32(1), u32(1), []byte("a"), u64(math.MaxUint64), u64(0)))},
		{"duplicate", seal(Schema2, cat(u32(2), u32(1), []byte("a"), u64(1), u64(0), u32(1), []byte("a"), u64(1), u64(0)))},
		{"trailing bytes", seal(Schema2, cat(u32(0), []byte("x")))},
		{"schema 1 missing charges", seal(Schema1, u32(0))},
		{"schema 1 duplicate charge", seal(Schema1, cat(u32(0), u32(2), u32(0), u64(1), u32(0), u64(1)))},
	}
	for i := range len(good) {
		tests = append(tests, struct {
			name string
			snap []byte
		}{fmt.Sprintf("truncated to %d", i), good[:i]})
	}
	for _, tt := range tests {
		for _, l := range []loader{sampleV1(), Up1to2(sampleV1())} {
			before := snapshot(l)
			if _, err := l.Load(bytes.NewReader(tt.snap)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s into %T: err = %v, want ErrCorrupt", tt.name, l, err)
			}
			if !bytes.Equal(snapshot(l), before) {
				t.Errorf("%s into %T: a failed Load changed the ledger", tt.name, l)
			}
		}
	}
}

// A declared count of 4 billion records must be refused before any map is
// sized for it.
func TestHugeCountDoesNotAllocate(t *testing.T) {
	huge := binary.BigEndian.AppendUint32(nil, math.MaxUint32)
	for _, l := range []loader{NewV1(), NewV2()} {
		snap := seal(Schema1, huge)
		if _, ok := l.(*V2); ok {
			snap = seal(Schema2, huge)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := l.Load(bytes.NewReader(snap))
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%T: err = %v, want ErrCorrupt", l, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
			t.Fatalf("%T: decoding a huge count allocated %d bytes", l, grew)
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add(snapshot(sampleV1()))
	f.Add(snapshot(Up1to2(sampleV1())))
	f.Fuzz(func(t *testing.T, snap []byte) {
		l := NewV2()
		if _, err := l.Load(bytes.NewReader(snap)); err != nil {
			return
		}
		// Whatever loads must survive a trip through the other layout.
		v1 := NewV1()
		if _, err := v1.Load(bytes.NewReader(snapshot(l))); err != nil {
			t.Fatalf("schema 2 snapshot of a loaded ledger does not load into v1: %v", err)
		}
	})
}
