package ledger

import (
	"errors"
	"fmt"
	"io"

	"github.com/handoff-dev/handoff/statefile"
)

// Schemas known to this package.
const (
	Schema1 uint32 = 1 // *V1: sections "balances" and "charges"
	Schema2 uint32 = 2 // *V2: section "accounts"
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
	if err := encodeMap(enc, l.balances, func(k string, b int64) balanceRec { return balanceRec{k, b} }); err != nil {
		return err
	}
	if enc, err = out.Section("charges"); err != nil {
		return err
	}
	return encodeMap(enc, l.charges, func(k string, n uint64) chargeRec { return chargeRec{k, n} })
}

func saveV2(out *statefile.Out, l *V2) error {
	enc, err := out.Section("accounts")
	if err != nil {
		return err
	}
	return encodeMap(enc, l.accounts, func(k string, a *Account) accountRec { return accountRec{k, a.Balance, a.Charges} })
}

// encodeMap writes the number of records, so that the reader can size its
// map once instead of growing it, then m as batches of records.
func encodeMap[V, R any](enc statefile.Encoder, m map[string]V, rec func(string, V) R) error {
	if err := enc.Encode(uint64(len(m))); err != nil {
		return err
	}
	recs := make([]R, 0, batch)
	for k, v := range m {
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
	accounts, err := decodeMap(in, "accounts", func(r accountRec) (string, *Account, bool) {
		return r.Acct, &Account{r.Balance, r.Charges}, r.Balance >= 0
	})
	return &V2{accounts: accounts}, err
}

// maxSizeHint bounds the map size taken from a file's record count: a
// count is only a hint, and a wrong one must not allocate gigabytes.
const maxSizeHint = 1 << 20

// decodeMap reads the section name as written by encodeMap: the record
// count, then batches of records to the section's end. valid says whether
// a record may be loaded. Each batch goes into a fresh slice: gob leaves
// out zero fields, so decoding into a used one would keep the previous
// batch's values where this one has zeros.
func decodeMap[R, V any](in *statefile.In, name string, kv func(R) (string, V, bool)) (map[string]V, error) {
	dec, err := in.Section(name)
	if err != nil {
		return nil, err
	}
	var count uint64
	if err := dec.Decode(&count); err != nil {
		return nil, fmt.Errorf("section %q: record count: %w", name, err)
	}
	m := make(map[string]V, min(count, maxSizeHint))
	for {
		var recs []R
		err := dec.Decode(&recs)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("section %q: %w", name, err)
		}
		for _, r := range recs {
			k, v, valid := kv(r)
			if err := putNew(m, k, v, valid); err != nil {
				return nil, err
			}
		}
	}
	if uint64(len(m)) != count {
		return nil, fmt.Errorf("%w: section %q says %d records and holds %d", statefile.ErrCorrupt, name, count, len(m))
	}
	return m, nil
}

// putNew adds k to m. A checksum cannot vouch for what the writer meant,
// so an account twice or a negative balance is refused as corrupt.
func putNew[V any](m map[string]V, k string, v V, valid bool) error {
	if _, dup := m[k]; dup {
		return fmt.Errorf("%w: account %q twice", statefile.ErrCorrupt, k)
	}
	if !valid {
		return fmt.Errorf("%w: account %q has a negative balance", statefile.ErrCorrupt, k)
	}
	m[k] = v
	return nil
}
