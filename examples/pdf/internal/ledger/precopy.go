package ledger

import "unsafe"

// A pre-copy of a V2 (handoff.Precopy): Track takes a copy of the ledger
// to encode while it serves on, and from then on records which accounts
// change or are added, so that the pause carries only those (Changed).
//
// Track copies only what changes in place: the balances, the charge
// counts and the index. The names, their ends and their hashes only grow,
// by appends past what the copy reads, so the copy shares them. The copy
// goes into a Room touched beforehand: a fresh page costs a fault of
// about 10 µs on these machines, 5,000 of them for a million accounts,
// and the copy runs under the server's lock.

// Room is memory for one Track, its pages touched, so that the copy
// under the lock is a memory copy and no page faults.
type Room struct {
	index    []uint32
	balances []int64
	charges  []uint64
}

// Sizes returns what a Room for a Track of l needs now: its records and
// its index slots.
func (l *V2) Sizes() (records, slots int) { return l.Len(), len(l.index) }

// NewRoom returns memory for a Track of a ledger of the given sizes, with
// room for what it grows by in the meantime (a Track of a ledger that
// grew past it still works, by allocating under the lock).
func NewRoom(records, slots int) *Room {
	records += records/8 + 1024
	slots += slots/8 + 1024
	r := &Room{index: make([]uint32, slots), balances: make([]int64, records), charges: make([]uint64, records)}
	touch(r.index)
	touch(r.balances)
	touch(r.charges)
	return r
}

// touch writes one word of every page of s.
func touch[T uint32 | int64 | uint64](s []T) {
	const page = 4096
	var zero T
	step := page / int(unsafe.Sizeof(zero))
	for i := 0; i < len(s); i += step {
		s[i] = zero
	}
}

// Track returns a copy of l as it is now, which stays as it is while l
// changes, and begins recording the accounts that change or are added
// from now on (forgetting those of an earlier Track). Call it under the
// lock that guards l; read the copy without it. room is used up.
func (l *V2) Track(room *Room) *V2 {
	n := l.Len()
	l.changes.Start()
	return &V2{
		seed:     l.seed,
		names:    l.names[:len(l.names):len(l.names)],
		ends:     l.ends[:n:n],
		hashes:   l.hashes[:n:n],
		balances: append(room.balances[:0], l.balances...),
		charges:  append(room.charges[:0], l.charges...),
		homes:    l.homes,
		index:    append(room.index[:0], l.index...),
	}
}

// Changed returns a ledger of the accounts changed or added since Track,
// as they are now, and stops recording: what, applied (Apply) to the copy
// Track returned, makes l. Call it under the lock that guards l.
func (l *V2) Changed() *V2 {
	marked := l.changes.Marked()
	c := &V2{seed: l.seed}
	c.reserve(len(marked), 16)
	for _, r := range marked {
		c.appendRecord(string(l.name(r)), Account{l.balances[r], l.charges[r]})
	}
	l.changes.Stop()
	if err := c.reindex(); err != nil {
		panic(err) // each record is marked once
	}
	return c
}

// Untrack stops recording changes (an upgrade that took a Track rolled
// back before it asked for the changes).
func (l *V2) Untrack() { l.changes.Stop() }

// Apply sets every account of changes in l, adding those l lacks.
func (l *V2) Apply(changes *V2) {
	for r := range uint32(changes.Len()) {
		l.SetAccount(string(changes.name(r)), Account{changes.balances[r], changes.charges[r]})
	}
}
