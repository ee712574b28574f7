package ledger

import (
	"bytes"
	"cmp"
	"fmt"
	"iter"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"

	"github.com/handoff-dev/handoff/statefile"
)

// V2 is the v2 layout (schema 2): accounts with a balance and a charge
// count. It is held as flat arrays instead of a map of *Account, so that
// a state file can be loaded at close to the speed of copying it (schema
// 3, fast.go): a Go map of a million string keys costs a million
// allocations and a million hashed inserts to rebuild, where these arrays
// are read in bulk and their index is laid out in one sequential pass.
//
// Records are numbered in the order they were added (or loaded). names
// holds every name back to back; ends[r] is where record r's name ends.
// The index is an open-addressing hash table with linear probing and no
// wrap-around, kept in strictly increasing (hash, name) order: slot i
// holds a record number plus one, or 0 if empty, and every record sits at
// or after its home slot with no empty slot in between. That order makes
// the layout canonical: given the records sorted by (hash, name), slot k
// of the sequence is max(home, previous slot + 1), which is how a load
// and a growth lay it out without probing.
type V2 struct {
	seed     uint64   // keys the hash; chosen at random, kept in the state file
	names    []byte   // account names, back to back, by record
	ends     []uint32 // ends[r]: where record r's name ends in names
	hashes   []uint64 // hashes[r]: hash of record r's name
	balances []int64
	charges  []uint64
	homes    int               // homes are 0 … homes-1; the index has spare slots past them
	index    []uint32          // record + 1 by slot, 0 if empty
	changes  statefile.Changes // records changed or added since Track (precopy.go)
}

// NewV2 returns an empty v2 ledger.
func NewV2() *V2 { return &V2{seed: rand.Uint64()} }

// Len returns the number of accounts.
func (l *V2) Len() int { return len(l.balances) }

func (l *V2) name(r uint32) []byte {
	start := uint32(0)
	if r > 0 {
		start = l.ends[r-1]
	}
	return l.names[start:l.ends[r]]
}

// find returns the record of acct, or false.
func (l *V2) find(acct string) (uint32, bool) {
	h := hashName(l.seed, acct)
	for i := home(h, l.homes); i < len(l.index) && l.index[i] != 0; i++ {
		r := l.index[i] - 1
		if l.hashes[r] > h {
			break
		}
		if l.hashes[r] == h && string(l.name(r)) == acct {
			return r, true
		}
	}
	return 0, false
}

// add appends a record for acct, which must be new, and indexes it.
func (l *V2) add(acct string, a Account) {
	r := l.appendRecord(acct, a)
	l.changes.Mark(r)
	if len(l.balances) > l.homes/4*3 {
		l.grow()
	}
	for !l.insert(r) {
		l.grow()
	}
}

// appendRecord adds a record for acct without indexing it.
func (l *V2) appendRecord(acct string, a Account) uint32 {
	if len(l.names)+len(acct) > math.MaxUint32 {
		// 4 GiB of names: far past what one process serves.
		panic("ledger: account names exceed 4 GiB")
	}
	l.names = append(l.names, acct...)
	l.ends = append(l.ends, uint32(len(l.names)))
	l.hashes = append(l.hashes, hashName(l.seed, acct))
	l.balances = append(l.balances, a.Balance)
	l.charges = append(l.charges, a.Charges)
	return uint32(len(l.balances) - 1)
}

// reserve makes room for n more records, names of about nameLen bytes
// each, so that appending them does not copy the arrays as they grow.
func (l *V2) reserve(n, nameLen int) {
	l.names = slices.Grow(l.names, n*nameLen)
	l.ends = slices.Grow(l.ends, n)
	l.hashes = slices.Grow(l.hashes, n)
	l.balances = slices.Grow(l.balances, n)
	l.charges = slices.Grow(l.charges, n)
}

// reindex builds the index of every record at once, as a load or a
// migration that appended them does: a sort by (hash, name), then the
// layout. Inserting them one by one would probe at random and shift
// runs. Two records of one name are an error.
func (l *V2) reindex() error {
	sorted := l.sorted()
	for i := 1; i < len(sorted); i++ {
		if l.hashes[sorted[i-1]] == l.hashes[sorted[i]] && bytes.Equal(l.name(sorted[i-1]), l.name(sorted[i])) {
			return fmt.Errorf("account %q twice", l.name(sorted[i]))
		}
	}
	l.homes = homesFor(len(sorted))
	for {
		if index, ok := layout(l.homes, l.hashes, slices.Values(sorted)); ok {
			l.index = index
			return nil
		}
		l.homes *= 2
	}
}

// sorted returns the record numbers in increasing (hash, name) order: a
// counting sort on the hashes' top bits, about one record per bucket,
// then each bucket sorted on its own.
func (l *V2) sorted() []uint32 {
	shift := 64 - min(24, max(1, bits.Len(uint(len(l.hashes)))))
	starts := make([]uint32, 1<<(64-shift)+1)
	for _, h := range l.hashes {
		starts[h>>shift+1]++
	}
	for b := 1; b < len(starts); b++ {
		starts[b] += starts[b-1]
	}
	sorted := make([]uint32, len(l.hashes))
	next := slices.Clone(starts[:len(starts)-1])
	for r, h := range l.hashes {
		sorted[next[h>>shift]] = uint32(r)
		next[h>>shift]++
	}
	for b := range len(starts) - 1 {
		if bucket := sorted[starts[b]:starts[b+1]]; len(bucket) > 1 {
			slices.SortFunc(bucket, l.compare)
		}
	}
	return sorted
}

func (l *V2) compare(a, b uint32) int {
	if c := cmp.Compare(l.hashes[a], l.hashes[b]); c != 0 {
		return c
	}
	return bytes.Compare(l.name(a), l.name(b))
}

// insert puts record r into the index at its place in (hash, name) order,
// shifting the records after it in its run by one slot. It returns false,
// changing nothing, if the run would spill past the last slot.
func (l *V2) insert(r uint32) bool {
	i := home(l.hashes[r], l.homes)
	for i < len(l.index) && l.index[i] != 0 && l.less(l.index[i]-1, r) {
		i++
	}
	end := i
	for end < len(l.index) && l.index[end] != 0 {
		end++
	}
	if end == len(l.index) {
		return false
	}
	copy(l.index[i+1:end+1], l.index[i:end])
	l.index[i] = r + 1
	return true
}

// less orders records by (hash, name).
func (l *V2) less(a, b uint32) bool { return l.compare(a, b) < 0 }

// grow doubles the home slots and lays the index out again, in the order
// it already has.
func (l *V2) grow() {
	homes := max(16, 2*l.homes)
	for {
		if index, ok := layout(homes, l.hashes, l.indexed()); ok {
			l.homes, l.index = homes, index
			return
		}
		homes *= 2
	}
}

// indexed yields the indexed records in slot order.
func (l *V2) indexed() iter.Seq[uint32] {
	return func(yield func(uint32) bool) {
		for _, e := range l.index {
			if e != 0 && !yield(e-1) {
				return
			}
		}
	}
}

// layout builds the index for records given in increasing (hash, name)
// order: each goes to its home slot or the one after its predecessor,
// whichever is later. It fails if a record would land past the last slot.
func layout(homes int, hashes []uint64, sorted iter.Seq[uint32]) ([]uint32, bool) {
	index := make([]uint32, slotsFor(homes))
	next := 0
	for r := range sorted {
		i := max(home(hashes[r], homes), next)
		if i >= len(index) {
			return nil, false
		}
		index[i] = r + 1
		next = i + 1
	}
	return index, true
}

// homesFor is the number of home slots a load gives n accounts: room for
// half as many again before the first growth.
func homesFor(n int) int { return max(16, n/2*3+1) }

// slotsFor is the index length for homes home slots: runs of linear
// probing spill past the last home, and without wrap-around they need
// spare slots; a run that spills further makes the index grow.
func slotsFor(homes int) int { return homes + homes/16 + 64 }

// home maps a hash to a slot in [0, homes), preserving order: a larger
// hash never has an earlier home.
func home(h uint64, homes int) int {
	hi, _ := bits.Mul64(h, uint64(homes))
	return int(hi)
}

// hashName is a keyed 64-bit hash in the manner of wyhash: eight bytes at
// a time through a 128-bit multiply. The key (the ledger's seed) is
// random, so that clients choosing account names cannot aim them at one
// run of the index; it is kept in the state file, as the index's order
// depends on it. Names are strings or bytes, hashed alike.
func hashName[S string | []byte](seed uint64, s S) uint64 {
	h := seed ^ 0xa0761d6478bd642f
	n := uint64(len(s))
	for len(s) > 8 {
		w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		h = mix(h^w, 0xe7037ed1a0b428db)
		s = s[8:]
	}
	var w uint64
	for i := range len(s) {
		w |= uint64(s[i]) << (8 * i)
	}
	return mix(h^w, 0x8ebc6af09c88c6e3^n)
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
