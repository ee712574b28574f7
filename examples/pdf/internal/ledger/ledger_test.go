package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
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
	if _, ok := l.Charge("nobody", 1); ok || l.Len() != 1 {
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

// SetAccount replaces an account, known or not, in both layouts, and
// Account reads back what was set: a rolling upgrade carries accounts so.
func TestSetAccount(t *testing.T) {
	for _, l := range []interface {
		Charge(string, int64) (int64, bool)
		Account(string) Account
		SetAccount(string, Account)
	}{sampleV1(), Up1to2(sampleV1())} {
		if got := l.Account("alice"); got != (Account{Balance: 980, Charges: 2}) {
			t.Fatalf("%T: alice %+v, want 980 and 2 charges", l, got)
		}
		for _, a := range []Account{{Balance: 7, Charges: 3}, {Balance: 5}} {
			l.SetAccount("alice", a)
			l.SetAccount("dave", a)
			if l.Account("alice") != a || l.Account("dave") != a {
				t.Fatalf("%T: after SetAccount(%+v): alice %+v, dave %+v", l, a, l.Account("alice"), l.Account("dave"))
			}
		}
		if b, ok := l.Charge("dave", 5); b != 0 || !ok || l.Account("dave").Charges != 1 {
			t.Fatalf("%T: dave after a charge: %+v", l, l.Account("dave"))
		}
		if got := l.Account("nobody"); got != (Account{}) {
			t.Fatalf("%T: unknown account %+v", l, got)
		}
	}
	v1 := sampleV1()
	v1.SetAccount("alice", Account{Balance: 1})
	if _, ok := v1.charges["alice"]; ok {
		t.Fatal("v1 keeps a zero charge count")
	}
}

// checkIndex panics unless l's index is as table.go says: every record
// once, in strictly increasing (hash, name) order, each at or after its
// home with no empty slot between, and found by its name.
func checkIndex(l *V2) {
	seen := 0
	var prev uint32
	for i, e := range l.index {
		if e == 0 {
			continue
		}
		r := e - 1
		if seen > 0 && !l.less(prev, r) {
			panic(fmt.Sprintf("slot %d: record %d out of order", i, r))
		}
		for j := home(l.hashes[r], l.homes); j < i; j++ {
			if l.index[j] == 0 {
				panic(fmt.Sprintf("slot %d: record %d after an empty slot %d", i, r, j))
			}
		}
		if h := home(l.hashes[r], l.homes); h > i {
			panic(fmt.Sprintf("slot %d: record %d before its home %d", i, r, h))
		}
		if l.hashes[r] != hashName(l.seed, l.name(r)) {
			panic(fmt.Sprintf("record %d: wrong hash", r))
		}
		if got, ok := l.find(string(l.name(r))); !ok || got != r {
			panic(fmt.Sprintf("record %d %q not found", r, l.name(r)))
		}
		prev = r
		seen++
	}
	if seen != l.Len() {
		panic(fmt.Sprintf("%d records, %d indexed", l.Len(), seen))
	}
}

// V2 against a map: random top-ups (some overflowing), charges (some
// denied, some of unknown accounts) and replacements over a few thousand
// names, with a trip through a random schema every so often, keep every
// balance and charge count exact, and the index whole.
func TestV2AgainstAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var l Ledger2 = NewV2()
	want := map[string]Account{}
	for i := range 200_000 {
		acct := fmt.Sprintf("n%d", rng.IntN(5000))
		switch op := rng.IntN(10); {
		case op < 4:
			amount := rng.Int64N(1000) + 1
			if rng.IntN(100) == 0 {
				amount = math.MaxInt64 - rng.Int64N(10)
			}
			b, err := l.TopUp(acct, amount)
			a := want[acct]
			if a.Balance > math.MaxInt64-amount {
				if !errors.Is(err, ErrOverflow) || b != a.Balance {
					t.Fatalf("op %d: TopUp(%q, %d) = %d, %v; want overflow at %d", i, acct, amount, b, err, a.Balance)
				}
				continue
			}
			a.Balance += amount
			if err != nil || b != a.Balance {
				t.Fatalf("op %d: TopUp(%q, %d) = %d, %v; want %d", i, acct, amount, b, err, a.Balance)
			}
			want[acct] = a
		case op < 8:
			amount := rng.Int64N(1500) + 1
			b, ok := l.Charge(acct, amount)
			a, known := want[acct]
			if !known || a.Balance < amount {
				if ok || b != a.Balance {
					t.Fatalf("op %d: Charge(%q, %d) = %d, %v; want denied at %d", i, acct, amount, b, ok, a.Balance)
				}
				continue
			}
			a.Balance -= amount
			a.Charges++
			if !ok || b != a.Balance {
				t.Fatalf("op %d: Charge(%q, %d) = %d, %v; want %d", i, acct, amount, b, ok, a.Balance)
			}
			want[acct] = a
		case op < 9:
			a := Account{Balance: rng.Int64N(1 << 40), Charges: rng.Uint64N(10)}
			l.SetAccount(acct, a)
			want[acct] = a
		default:
			if got := l.Account(acct); got != want[acct] {
				t.Fatalf("op %d: Account(%q) = %+v, want %+v", i, acct, got, want[acct])
			}
		}
		if i%20_000 == 19_999 {
			schema := []uint32{Schema2, Schema3}[rng.IntN(2)]
			var b bytes.Buffer
			if err := States.SaveAs(&b, l, schema, 1); err != nil {
				t.Fatal(err)
			}
			back, _, err := States.Load(&b, Schema2)
			if err != nil {
				t.Fatalf("op %d: schema %d: %v", i, schema, err)
			}
			l = back.(*V2)
			if !reflect.DeepEqual(accounts(l), any(want)) {
				t.Fatalf("op %d: through schema %d the ledger changed", i, schema)
			}
		}
	}
	if !reflect.DeepEqual(accounts(l), any(want)) {
		t.Fatal("the ledger and the map differ")
	}
}

// Ledger2 is what TestV2AgainstAMap calls.
type Ledger2 interface {
	TopUp(string, int64) (int64, error)
	Charge(string, int64) (int64, bool)
	Account(string) Account
	SetAccount(string, Account)
}
