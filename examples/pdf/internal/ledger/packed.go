package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"

	"github.com/handoff-dev/handoff/statefile"
)

// Packed is a V2 in schema 3, the layout a load reads at close to the
// speed of copying it: SaveAs(w, l, Schema3) writes a *V2 so, and a
// schema 3 file loads as a *V2 (or a *V1) through O(1) steps. It is a
// separate type only because a statefile schema is named by its type.
//
// Only a process known to read schema 3 may be sent one: binaries built
// before it read schemas 1 and 2 alone (see the server's SaveState).
type Packed struct{ l *V2 }

// The section of schema 3, "accounts", holds, all integers little-endian:
//
//	count     u64   accounts
//	seed      u64   the hash key (V2.seed)
//	lenBytes  u64   bytes of the lengths block
//	nameBytes u64   bytes of the names block
//	lengths   count uvarints, each name's length
//	names     the names, back to back
//	balances  count × i64
//	charges   count × u64
//
// with the accounts in increasing (hashName(seed, name), name) order, the
// index's order: a load hashes each name once, in one sequential pass,
// and lays out the index from that order without probing (table.go), and
// the order itself proves that no name is there twice.
const packedHeader = 4 * 8

// A load allocates from the counts a file claims at most this much before
// the bytes arrive: a damaged count must not allocate gigabytes.
const maxPrealloc = 64 << 20

func savePacked(out *statefile.Out, p *Packed) error {
	w, err := out.Bytes("accounts")
	if err != nil {
		return err
	}
	l := p.l
	lenBytes := 0
	for r := range uint32(l.Len()) {
		lenBytes += uvarintLen(uint64(len(l.name(r))))
	}
	bw := blockWriter{w: w, buf: make([]byte, 0, 64<<10)}
	for _, v := range []uint64{uint64(l.Len()), l.seed, uint64(lenBytes), uint64(len(l.names))} {
		bw.buf = binary.LittleEndian.AppendUint64(bw.buf, v)
	}
	// One pass per block, each in index order: every pass reads one or
	// two arrays, so that what it reads stays in the cache.
	for r := range l.indexed() {
		bw.buf = binary.AppendUvarint(bw.buf, uint64(len(l.name(r))))
		bw.flushIfFull()
	}
	for r := range l.indexed() {
		bw.buf = append(bw.buf, l.name(r)...)
		bw.flushIfFull()
	}
	for r := range l.indexed() {
		bw.buf = binary.LittleEndian.AppendUint64(bw.buf, uint64(l.balances[r]))
		bw.flushIfFull()
	}
	for r := range l.indexed() {
		bw.buf = binary.LittleEndian.AppendUint64(bw.buf, l.charges[r])
		bw.flushIfFull()
	}
	bw.flush()
	return bw.err
}

// blockWriter gathers small appends into writes of about 64 KiB.
type blockWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (b *blockWriter) flushIfFull() {
	if len(b.buf) >= cap(b.buf)-4096 { // room for the next name or number
		b.flush()
	}
}

func (b *blockWriter) flush() {
	if b.err == nil && len(b.buf) > 0 {
		_, b.err = b.w.Write(b.buf)
	}
	b.buf = b.buf[:0]
}

func uvarintLen(x uint64) int { return max(1, (bits.Len64(x)+6)/7) }

func loadPacked(in *statefile.In) (*Packed, error) {
	r, err := in.Bytes("accounts")
	if err != nil {
		return nil, err
	}
	var hdr [packedHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, short(err, "header")
	}
	count, seed := binary.LittleEndian.Uint64(hdr[:]), binary.LittleEndian.Uint64(hdr[8:])
	lenBytes, nameBytes := binary.LittleEndian.Uint64(hdr[16:]), binary.LittleEndian.Uint64(hdr[24:])
	switch {
	case count >= math.MaxUint32: // record numbers + 1 are uint32
		return nil, corrupt("%d accounts", count)
	case lenBytes < count || lenBytes > count*binary.MaxVarintLen64:
		return nil, corrupt("%d bytes of lengths for %d accounts", lenBytes, count)
	case nameBytes > math.MaxUint32:
		return nil, corrupt("%d bytes of names", nameBytes)
	}
	l := &V2{seed: seed}
	lens, err := readBytes(r, lenBytes)
	if err != nil {
		return nil, short(err, "lengths")
	}
	if l.names, err = readBytes(r, nameBytes); err != nil {
		return nil, short(err, "names")
	}
	if l.balances, err = readWords[int64](r, count); err != nil {
		return nil, short(err, "balances")
	}
	if l.charges, err = readWords[uint64](r, count); err != nil {
		return nil, short(err, "charges")
	}
	if n, err := r.Read(hdr[:1]); n > 0 || !errors.Is(err, io.EOF) {
		if n > 0 {
			return nil, corrupt("bytes after the charges")
		}
		return nil, err
	}
	if l.ends, err = nameEnds(lens, count, nameBytes); err != nil {
		return nil, err
	}
	if err := l.hashInOrder(); err != nil {
		return nil, err
	}
	for r, b := range l.balances {
		if b < 0 {
			return nil, negative(string(l.name(uint32(r))))
		}
	}
	l.homes = homesFor(int(count))
	for {
		index, ok := layout(l.homes, l.hashes, allRecords(uint32(count)))
		if ok {
			l.index = index
			return &Packed{l}, nil
		}
		l.homes *= 2
	}
}

// nameEnds turns count uvarint lengths into where each name ends; they
// must fill lens exactly and add up to nameBytes.
func nameEnds(lens []byte, count, nameBytes uint64) ([]uint32, error) {
	ends := make([]uint32, count)
	end := uint64(0)
	for r := range ends {
		n, k := binary.Uvarint(lens)
		if k <= 0 {
			return nil, corrupt("length of account %d unreadable", r)
		}
		lens = lens[k:]
		end += n
		if end > nameBytes {
			return nil, corrupt("names run past the %d bytes of the names block", nameBytes)
		}
		ends[r] = uint32(end)
	}
	if len(lens) > 0 || end != nameBytes {
		return nil, corrupt("lengths and names do not match")
	}
	return ends, nil
}

// hashInOrder hashes every name and checks that the records are in
// strictly increasing (hash, name) order: the order the index is laid out
// from, and the proof that no name is there twice, since equal names
// have equal hashes and would sit side by side.
func (l *V2) hashInOrder() error {
	l.hashes = make([]uint64, len(l.ends))
	start := uint32(0)
	var prev []byte
	for r, end := range l.ends {
		name := l.names[start:end]
		h := hashName(l.seed, name)
		if r > 0 && (h < l.hashes[r-1] || h == l.hashes[r-1] && bytes.Compare(prev, name) >= 0) {
			if bytes.Equal(prev, name) {
				return duplicate(string(name))
			}
			return corrupt("accounts out of order at %q", name)
		}
		l.hashes[r], prev, start = h, name, end
	}
	return nil
}

func allRecords(n uint32) func(func(uint32) bool) {
	return func(yield func(uint32) bool) {
		for r := range n {
			if !yield(r) {
				return
			}
		}
	}
}

// readBytes reads n bytes, allocating as they arrive beyond maxPrealloc.
func readBytes(r io.Reader, n uint64) ([]byte, error) {
	b := make([]byte, 0, min(n, maxPrealloc))
	for uint64(len(b)) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, int(min(n-uint64(len(b)), uint64(len(b)))))
		}
		k, err := io.ReadFull(r, b[len(b):min(uint64(cap(b)), n)])
		b = b[:len(b)+k]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// readWords reads n little-endian 64-bit words.
func readWords[T int64 | uint64](r io.Reader, n uint64) ([]T, error) {
	words := make([]T, 0, min(n, maxPrealloc/8))
	buf := make([]byte, 64<<10)
	for uint64(len(words)) < n {
		p := buf[:min(uint64(len(buf)), 8*(n-uint64(len(words))))]
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, err
		}
		for len(p) >= 8 {
			words = append(words, T(binary.LittleEndian.Uint64(p)))
			p = p[8:]
		}
	}
	return words, nil
}

// short explains a section that ended early, and passes on the Reader's
// own errors (a checksum) as they are.
func short(err error, block string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corrupt("the section ends within its %s", block)
	}
	return err
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: section \"accounts\": %s", statefile.ErrCorrupt, fmt.Sprintf(format, args...))
}
