// Package ledger holds the account balances of the PDF server in the two
// in-memory layouts its versions use, and their statefile schemas.
//
// Schema 1 is v1's live type, V1: two maps, balances and charge counts.
// Schema 2 is v2's live type, V2: accounts in flat arrays with an index
// (table.go), written as gob records. States registers both with the
// migrations Up1to2 and Down2to1, so a state file of either schema loads
// as either type: an upgrade, a rollback and a cold restart of either
// version all keep every balance and every charge count. Schema 3 is a V2
// written as bulk arrays (packed.go), which loads at close to the speed of
// copying it; binaries built before it do not read it, so it goes only to
// a process known to (the server's SaveStateAs).
//
// The types are not safe for concurrent use; the server holds a lock.
package ledger

import (
	"errors"
	"iter"
	"math"
)

// ErrOverflow is returned by TopUp when the new balance would not fit in an
// int64. The balance is unchanged.
var ErrOverflow = errors.New("ledger: balance overflow")

// V1 is the v1 layout (schema 1): balances and successful charge counts in
// two maps keyed by account.
type V1 struct {
	balances map[string]int64
	charges  map[string]uint64
}

// NewV1 returns an empty v1 ledger.
func NewV1() *V1 {
	return &V1{balances: map[string]int64{}, charges: map[string]uint64{}}
}

// TopUp adds amount (> 0) to acct and returns the new balance.
func (l *V1) TopUp(acct string, amount int64) (int64, error) {
	b, err := add(l.balances[acct], amount)
	if err != nil {
		return l.balances[acct], err
	}
	l.balances[acct] = b
	return b, nil
}

// Charge takes amount (> 0) from acct if the balance covers it. It returns
// the balance after the charge, or the unchanged balance and false.
func (l *V1) Charge(acct string, amount int64) (int64, bool) {
	b := l.balances[acct]
	if b < amount {
		return b, false
	}
	l.balances[acct] = b - amount
	l.charges[acct]++
	return b - amount, true
}

// Balance returns the balance of acct, 0 if unknown.
func (l *V1) Balance(acct string) int64 { return l.balances[acct] }

// Account returns everything v1 keeps about acct. (Not named Stats: v1
// does not answer STATS, and a server looks for that method.)
func (l *V1) Account(acct string) Account {
	return Account{Balance: l.balances[acct], Charges: l.charges[acct]}
}

// SetAccount replaces what v1 keeps about acct with a, whatever it was.
// Like Down2to1, it keeps no zero charge count.
func (l *V1) SetAccount(acct string, a Account) {
	l.balances[acct] = a.Balance
	if a.Charges > 0 {
		l.charges[acct] = a.Charges
	} else {
		delete(l.charges, acct)
	}
}

// Account is one account in the v2 layout.
type Account struct {
	Balance int64
	Charges uint64 // successful charges, ever
}

// TopUp adds amount (> 0) to acct and returns the new balance.
func (l *V2) TopUp(acct string, amount int64) (int64, error) {
	r, ok := l.find(acct)
	if !ok {
		// A new account: amount > 0 cannot overflow a zero balance.
		l.add(acct, Account{Balance: amount})
		return amount, nil
	}
	b, err := add(l.balances[r], amount)
	if err != nil {
		return l.balances[r], err
	}
	l.balances[r] = b
	l.changes.Mark(r)
	return b, nil
}

// Charge takes amount (> 0) from acct if the balance covers it. It returns
// the balance after the charge, or the unchanged balance and false.
func (l *V2) Charge(acct string, amount int64) (int64, bool) {
	r, ok := l.find(acct)
	if !ok || l.balances[r] < amount {
		return l.Balance(acct), false
	}
	l.balances[r] -= amount
	l.charges[r]++
	l.changes.Mark(r)
	return l.balances[r], true
}

// Balance returns the balance of acct, 0 if unknown.
func (l *V2) Balance(acct string) int64 { return l.Account(acct).Balance }

// Stats returns the balance of acct and its number of successful charges.
func (l *V2) Stats(acct string) (balance int64, charges uint64) {
	a := l.Account(acct)
	return a.Balance, a.Charges
}

// Account returns acct as v2 keeps it; the zero Account if unknown.
func (l *V2) Account(acct string) Account {
	if r, ok := l.find(acct); ok {
		return Account{Balance: l.balances[r], Charges: l.charges[r]}
	}
	return Account{}
}

// SetAccount replaces acct with a, whatever it was.
func (l *V2) SetAccount(acct string, a Account) {
	r, ok := l.find(acct)
	if !ok {
		l.add(acct, a)
		return
	}
	l.balances[r], l.charges[r] = a.Balance, a.Charges
	l.changes.Mark(r)
}

// All yields every account, in no particular order.
func (l *V2) All() iter.Seq2[string, Account] {
	return func(yield func(string, Account) bool) {
		for r := range uint32(l.Len()) {
			if !yield(string(l.name(r)), Account{l.balances[r], l.charges[r]}) {
				return
			}
		}
	}
}

func add(balance, amount int64) (int64, error) {
	if amount > 0 && balance > math.MaxInt64-amount {
		return balance, ErrOverflow
	}
	return balance + amount, nil
}

// Up1to2 converts a v1 ledger to the v2 layout. An account that has a
// charge count but no balance entry keeps its count.
func Up1to2(l *V1) *V2 {
	v2 := NewV2()
	v2.reserve(len(l.balances), 16)
	for k, b := range l.balances {
		v2.appendRecord(k, Account{Balance: b, Charges: l.charges[k]})
	}
	for k, n := range l.charges {
		if _, ok := l.balances[k]; !ok {
			v2.appendRecord(k, Account{Charges: n})
		}
	}
	if err := v2.reindex(); err != nil {
		panic(err) // map keys are unique
	}
	return v2
}

// Down2to1 converts a v2 ledger to the v1 layout. v1 keeps charge counts only
// for accounts that were charged, so zero counts are left out.
func Down2to1(l *V2) *V1 {
	v1 := &V1{
		balances: make(map[string]int64, l.Len()),
		charges:  map[string]uint64{},
	}
	for k, a := range l.All() {
		v1.SetAccount(k, a)
	}
	return v1
}

// Schema is the schema that holds a V1 in States.
func (l *V1) Schema() uint32 { return Schema1 }

// Schema is the schema that holds a V2 in States.
func (l *V2) Schema() uint32 { return Schema2 }
