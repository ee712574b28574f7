package ledger

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"

	"github.com/handoff-dev/handoff/statefile"
)

// Schemas known to this package.
const (
	Schema1 uint32 = 1 // *V1: sections "balances" and "charges"
	Schema2 uint32 = 2 // *V2: section "accounts", gob records
	// Schema3 is a *V2 as *Packed: section "accounts", bulk arrays
	// (packed.go). Binaries built before it do not read it.
	Schema3 uint32 = 3
)

// States is the pdf application's statefile schema set: both layouts, and
// the migrations between them in both directions, so that either binary
// reads the other's state, live or from a file.
var States = statefile.NewSet("pdf", statefile.Gob)

func init() {
	statefile.Register(States, Schema1, saveV1, loadV1)
	statefile.Register(States, Schema2, saveV2, loadV2)
	statefile.AddStep(States, Schema1, Schema2, func(l *V1) (*V2, error) { return Up1to2(l), nil })
	statefile.AddStep(States, Schema2, Schema1, func(l *V2) (*V1, error) { return Down2to1(l), nil })
	// The same ledger in another layout: the steps share it, and neither
	// changes it.
	statefile.Register(States, Schema3, savePacked, loadPacked)
	statefile.AddStep(States, Schema2, Schema3, func(l *V2) (*Packed, error) { return &Packed{l}, nil })
	statefile.AddStep(States, Schema3, Schema2, func(p *Packed) (*V2, error) { return p.l, nil })
}

// Records go through the codec in batches: one gob message per account
// would cost a header each, one for the whole map would hold the state
// twice.
const batch = 1024

type balanceRec struct {
	Acct    string
	Balance int64
}

type chargeRec struct {
	Acct    string
	Charges uint64
}

type accountRec struct {
	Acct    string
	Balance int64
	Charges uint64
}

func saveV1(out *statefile.Out, l *V1) error {
	enc, err := out.Section("balances")
	if err != nil {
		return err
	}
	if err := encodeRecords(enc, len(l.balances), maps.All(l.balances), func(k string, b int64) balanceRec { return balanceRec{k, b} }); err != nil {
		return err
	}
	if enc, err = out.Section("charges"); err != nil {
		return err
	}
	return encodeRecords(enc, len(l.charges), maps.All(l.charges), func(k string, n uint64) chargeRec { return chargeRec{k, n} })
}

func saveV2(out *statefile.Out, l *V2) error {
	enc, err := out.Section("accounts")
	if err != nil {
		return err
	}
	return encodeRecords(enc, l.Len(), l.All(), func(k string, a Account) accountRec { return accountRec{k, a.Balance, a.Charges} })
}

// encodeRecords writes the number of records, so that the reader can size
// its map once instead of growing it, then the n records of all as
// batches.
func encodeRecords[V, R any](enc statefile.Encoder, n int, all iter.Seq2[string, V], rec func(string, V) R) error {
	if err := enc.Encode(uint64(n)); err != nil {
		return err
	}
	recs := make([]R, 0, batch)
	for k, v := range all {
		recs = append(recs, rec(k, v))
		if len(recs) == batch {
			if err := enc.Encode(recs); err != nil {
				return err
			}
			recs = recs[:0]
		}
	}
	if len(recs) == 0 {
		return nil
	}
	return enc.Encode(recs)
}

func loadV1(in *statefile.In) (*V1, error) {
	l := &V1{}
	var err error
	l.balances, err = decodeMap(in, "balances", func(r balanceRec) (string, int64, bool) {
		return r.Acct, r.Balance, r.Balance >= 0
	})
	if err != nil {
		return nil, err
	}
	l.charges, err = decodeMap(in, "charges", func(r chargeRec) (string, uint64, bool) {
		return r.Acct, r.Charges, true
	})
	return l, err
}

func loadV2(in *statefile.In) (*V2, error) {
	l := NewV2()
	err := decodeRecords(in, "accounts", func(count uint64) { l.reserve(int(min(count, maxSizeHint)), 16) }, func(r accountRec) error {
		if r.Balance < 0 {
			return negative(r.Acct)
		}
		l.appendRecord(r.Acct, Account{r.Balance, r.Charges})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := l.reindex(); err != nil {
		return nil, fmt.Errorf("%w: %w", statefile.ErrCorrupt, err)
	}
	return l, nil
}

// maxSizeHint bounds the map size taken from a file's record count: a
// count is only a hint, and a wrong one must not allocate gigabytes.
const maxSizeHint = 1 << 20

// decodeMap reads the section name as encodeRecords wrote it into a map.
// valid says whether a record may be loaded.
func decodeMap[R, V any](in *statefile.In, name string, kv func(R) (string, V, bool)) (map[string]V, error) {
	var m map[string]V
	err := decodeRecords(in, name, func(count uint64) { m = make(map[string]V, min(count, maxSizeHint)) }, func(r R) error {
		k, v, valid := kv(r)
		if !valid {
			return negative(k)
		}
		// One map operation, not a lookup and then an insert: a name
		// already there leaves the length as it was.
		n := len(m)
		if m[k] = v; len(m) == n {
			return duplicate(k)
		}
		return nil
	})
	return m, err
}

// decodeRecords reads the section name as encodeRecords wrote it: the
// record count, given to start, then batches of records to the section's
// end, each record given to put. Each batch goes into a fresh slice: gob
// leaves out zero fields, so decoding into a used one would keep the
// previous batch's values where this one has zeros.
func decodeRecords[R any](in *statefile.In, name string, start func(count uint64), put func(R) error) error {
	dec, err := in.Section(name)
	if err != nil {
		return err
	}
	var count uint64
	if err := dec.Decode(&count); err != nil {
		return fmt.Errorf("section %q: record count: %w", name, err)
	}
	start(count)
	n := uint64(0)
	for {
		var recs []R
		err := dec.Decode(&recs)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("section %q: %w", name, err)
		}
		for _, r := range recs {
			if err := put(r); err != nil {
				return err
			}
		}
		n += uint64(len(recs))
	}
	if n != count {
		return fmt.Errorf("%w: section %q says %d records and holds %d", statefile.ErrCorrupt, name, count, n)
	}
	return nil
}

// A checksum cannot vouch for what the writer meant, so an account twice
// or a negative balance is refused as corrupt.
func duplicate(acct string) error {
	return fmt.Errorf("%w: account %q twice", statefile.ErrCorrupt, acct)
}

func negative(acct string) error {
	return fmt.Errorf("%w: account %q has a negative balance", statefile.ErrCorrupt, acct)
}
