package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"testing"

	"github.com/handoff-dev/handoff/statefile"
)

func saveAs(t testing.TB, l any, schema uint32) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := States.SaveAs(&b, l, schema, 3); err != nil {
		t.Fatalf("SaveAs(%T, %d): %v", l, schema, err)
	}
	return b.Bytes()
}

// Every schema is written from either layout and loads as every schema,
// with every balance and charge count intact.
func TestRoundTripEverySchema(t *testing.T) {
	for name, v1 := range map[string]*V1{"sample": sampleV1(), "empty": NewV1(), "many": bigV1(3*batch + 17)} {
		want := map[uint32]any{Schema1: v1, Schema2: Up1to2(v1), Schema3: Up1to2(v1)}
		for _, from := range States.Schemas() {
			for _, in := range []any{v1, Up1to2(v1)} {
				file := saveAs(t, in, from)
				for _, to := range States.Schemas() {
					got, h, err := States.Load(bytes.NewReader(file), to)
					if err != nil {
						t.Fatalf("%s: %T written as %d, loaded as %d: %v", name, in, from, to, err)
					}
					if h.Schema != from || h.Generation != 3 {
						t.Fatalf("%s: header %+v", name, h)
					}
					if !reflect.DeepEqual(accounts(got), accounts(want[to])) {
						t.Fatalf("%s: %T written as %d, loaded as %d: got %v", name, in, from, to, accounts(got))
					}
				}
			}
		}
	}
}

// Files written by the binaries built before schema 3 (testdata, by
// TestGenGolden of that tree; every pdf binary until then wrote these
// schemas, in gob) load as either layout, every account exact.
func TestLoadFilesOfEarlierBinaries(t *testing.T) {
	want := map[string]Account{
		"alice": {980, 2}, "bob": {5, 0}, "carol": {0, 1}, "": {1, 0},
		"dave": {math.MaxInt64, 0}, "erin": {0, 3},
	}
	for _, name := range []string{"before-schema3-v1.state", "before-schema3-v2.state"} {
		file, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		for _, to := range []uint32{Schema1, Schema2} {
			l, h, err := States.Load(bytes.NewReader(file), to)
			if err != nil {
				t.Fatalf("%s as %d: %v", name, to, err)
			}
			if h.Generation != 41 {
				t.Fatalf("%s: header %+v", name, h)
			}
			got := map[string]Account{}
			for acct := range want {
				got[acct] = l.(interface{ Account(string) Account }).Account(acct)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s as %d: %v, want %v", name, to, got, want)
			}
		}
	}
}

// packedFile writes a schema 3 file holding recs in the order given,
// with valid checksums, so that a test reaches the ledger's own checks.
// extra is appended to the section; lenBytes and nameBytes, if not -1,
// replace the header's.
func packedFile(t *testing.T, seed uint64, recs []accountRec, extra []byte, lenBytes, nameBytes int) []byte {
	var lens, names, bals, chgs []byte
	for _, r := range recs {
		lens = binary.AppendUvarint(lens, uint64(len(r.Acct)))
		names = append(names, r.Acct...)
		bals = binary.LittleEndian.AppendUint64(bals, uint64(r.Balance))
		chgs = binary.LittleEndian.AppendUint64(chgs, r.Charges)
	}
	if lenBytes < 0 {
		lenBytes = len(lens)
	}
	if nameBytes < 0 {
		nameBytes = len(names)
	}
	var body []byte
	for _, v := range []uint64{uint64(len(recs)), seed, uint64(lenBytes), uint64(nameBytes)} {
		body = binary.LittleEndian.AppendUint64(body, v)
	}
	body = append(append(append(append(append(body, lens...), names...), bals...), chgs...), extra...)
	return sealedSection(t, body)
}

// inOrder sorts recs as a schema 3 file must hold them under seed.
func inOrder(seed uint64, recs ...accountRec) []accountRec {
	l := &V2{seed: seed}
	for _, r := range recs {
		l.add(r.Acct, Account{r.Balance, r.Charges})
	}
	var out []accountRec
	for r := range l.indexed() {
		out = append(out, accountRec{string(l.name(r)), l.balances[r], l.charges[r]})
	}
	return out
}

// A checksum proves the bytes are what was written, not that the writer
// was right: whatever does not describe a ledger is refused as corrupt,
// with the reason.
func TestPackedRefusesBadContent(t *testing.T) {
	const seed = 7
	good := inOrder(seed, accountRec{"a", 1, 0}, accountRec{"b", 2, 3}, accountRec{"c", 0, 1})
	reversed := []accountRec{good[2], good[1], good[0]}
	twice := inOrder(seed, accountRec{"a", 1, 0}, accountRec{"b", 2, 3})
	twice = append(twice[:1], twice[0], twice[1]) // the first name twice, side by side
	for _, tt := range []struct {
		name, why string
		file      []byte
	}{
		{"duplicate", `account "`, packedFile(t, seed, twice, nil, -1, -1)},
		{"out of order", "out of order", packedFile(t, seed, reversed, nil, -1, -1)},
		{"wrong seed", "out of order", packedFile(t, seed+1, good, nil, -1, -1)},
		{"negative", "negative balance", packedFile(t, seed, inOrder(seed, accountRec{"a", -1, 0}), nil, -1, -1)},
		{"trailing bytes", "bytes after", packedFile(t, seed, good, []byte{0}, -1, -1)},
		{"short", "ends within its charges", shortened(t, seed, good)},
		{"names too long", "do not match", packedFile(t, seed, good, []byte{0}, -1, 4)},
		{"lengths too short", "bytes of lengths", packedFile(t, seed, good, nil, 2, -1)},
		{"count of 2^32", "4294967296 accounts", withCount(t, 1<<32)},
		{"count beyond the bytes", "ends within its lengths", withCount(t, 1<<31)},
	} {
		for _, want := range States.Schemas() {
			_, _, err := States.Load(bytes.NewReader(tt.file), want)
			if !errors.Is(err, statefile.ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(tt.why)) {
				t.Errorf("%s as schema %d: err = %v, want ErrCorrupt saying %q", tt.name, want, err, tt.why)
			}
		}
	}
	if _, _, err := States.Load(bytes.NewReader(packedFile(t, seed, good, nil, -1, -1)), Schema2); err != nil {
		t.Fatalf("a good file is refused: %v", err)
	}
}

// shortened is a schema 3 file of recs whose section lacks the last byte
// of the charges.
func shortened(t *testing.T, seed uint64, recs []accountRec) []byte {
	full := sectionOf(t, packedFile(t, seed, recs, nil, -1, -1))
	return sealedSection(t, full[:len(full)-1])
}

// withCount is a schema 3 file whose header claims count accounts.
func withCount(t *testing.T, count uint64) []byte {
	body := sectionOf(t, packedFile(t, 0, nil, nil, -1, -1))
	binary.LittleEndian.PutUint64(body, count)
	binary.LittleEndian.PutUint64(body[16:], count) // lengths: one byte each
	return sealedSection(t, body)
}

func sectionOf(t *testing.T, file []byte) []byte {
	r, err := statefile.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sealedSection(t *testing.T, body []byte) []byte {
	var b bytes.Buffer
	w, err := statefile.NewWriter(&b, statefile.Header{App: "pdf", Schema: Schema3})
	if err != nil {
		t.Fatal(err)
	}
	w.Section("accounts")
	w.Write(body)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Every truncation of a schema 3 file is refused, whatever schema is
// asked for.
func TestPackedRefusesTruncated(t *testing.T) {
	good := saveAs(t, sampleV1(), Schema3)
	for i := range len(good) {
		for _, want := range States.Schemas() {
			if _, _, err := States.Load(bytes.NewReader(good[:i]), want); !errors.Is(err, statefile.ErrCorrupt) {
				t.Fatalf("truncated to %d of %d, as %d: err = %v, want ErrCorrupt", i, len(good), want, err)
			}
		}
	}
}

// The index finds every account through many growths, with accounts
// added, replaced and charged in between, and a schema 3 round trip keeps
// the seed and lays the index out the same way.
func TestV2Index(t *testing.T) {
	l := NewV2()
	want := map[string]Account{}
	for i := range 20_000 {
		acct := fmt.Sprintf("a%d", i*7919%20011)
		l.TopUp(acct, int64(i+1))
		want[acct] = Account{Balance: want[acct].Balance + int64(i+1)}
		if i%3 == 0 {
			l.SetAccount(acct+"x", Account{Balance: 5, Charges: 9})
			want[acct+"x"] = Account{5, 9}
		}
		if i%1000 == 0 {
			checkIndex(l)
		}
	}
	if !reflect.DeepEqual(accounts(l), any(want)) {
		t.Fatal("the ledger lost or changed accounts")
	}
	back, _, err := States.Load(bytes.NewReader(saveAs(t, l, Schema3)), Schema2)
	if err != nil {
		t.Fatal(err)
	}
	b := back.(*V2)
	if !reflect.DeepEqual(accounts(b), any(want)) || b.seed != l.seed {
		t.Fatal("a schema 3 round trip changed the ledger")
	}
	b.TopUp("new", 1) // a loaded ledger grows like any other
	want["new"] = Account{Balance: 1}
	if !reflect.DeepEqual(accounts(b), any(want)) {
		t.Fatal("a loaded ledger lost accounts as it grew")
	}
}
