package statefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"runtime"
	"testing"
	"time"
)

type section struct {
	name string
	data []byte
}

var created = time.Date(2026, 11, 23, 10, 0, 0, 123, time.UTC)

// build writes a file of sections, each in writes of up to step bytes.
func build(t testing.TB, h Header, secs []section, step int) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := NewWriter(&b, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		if err := w.Section(s.name); err != nil {
			t.Fatal(err)
		}
		for p := s.data; len(p) > 0; {
			n := min(step, len(p))
			if _, err := w.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readAll reads a whole file back; it fails as the Reader does.
func readAll(file []byte) (Header, []section, error) {
	r, err := NewReader(bytes.NewReader(file))
	if err != nil {
		return Header{}, nil, err
	}
	var secs []section
	for {
		name, err := r.Next()
		if err == io.EOF {
			return r.Header(), secs, nil
		}
		if err != nil {
			return r.Header(), secs, err
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return r.Header(), secs, err
		}
		secs = append(secs, section{name, data})
	}
}

func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 7 / 3)
	}
	return p
}

func sample() (Header, []section) {
	return Header{App: "test", Schema: 3, Generation: 9, Created: created}, []section{
		{"small", []byte("hello")},
		{"empty", nil},
		{"big", pattern(3*writeChunk + 5)}, // four chunks
		{"small", []byte("names may repeat")},
	}
}

func TestRoundTrip(t *testing.T) {
	h, secs := sample()
	for _, step := range []int{1, 1000, 1 << 20} {
		file := build(t, h, secs, step)
		gotH, got, err := readAll(file)
		if err != nil {
			t.Fatalf("writes of %d: %v", step, err)
		}
		if !gotH.Created.Equal(h.Created) || gotH.App != h.App || gotH.Schema != h.Schema || gotH.Generation != h.Generation {
			t.Fatalf("header %+v, want %+v", gotH, h)
		}
		if len(got) != len(secs) {
			t.Fatalf("%d sections, want %d", len(got), len(secs))
		}
		for i := range secs {
			if got[i].name != secs[i].name || !bytes.Equal(got[i].data, secs[i].data) {
				t.Fatalf("section %d: %q of %d bytes, want %q of %d", i, got[i].name, len(got[i].data), secs[i].name, len(secs[i].data))
			}
		}
		// The bytes do not depend on how the writes were cut.
		if again := build(t, h, secs, 333); !bytes.Equal(file, again) {
			t.Fatal("the same content gave different files")
		}
	}
}

func TestWriterRefusesBadNames(t *testing.T) {
	if _, err := NewWriter(io.Discard, Header{}); err == nil {
		t.Fatal("empty application name accepted")
	}
	w, _ := NewWriter(io.Discard, Header{App: "x"})
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write before Section accepted")
	}
	w, _ = NewWriter(io.Discard, Header{App: "x"})
	if err := w.Section(string(make([]byte, 256))); err == nil {
		t.Fatal("256-byte section name accepted")
	}
	w.Close()
	if err := w.Close(); err == nil {
		t.Fatal("second Close accepted")
	}
}

// offsets of the parts of a file, for the corruption tests.
type layout struct {
	version    int   // the format version field
	boundaries []int // where each record (section start, chunk, section end, end record) begins
	chunkData  [][2]int
}

// mapFile walks a well-formed file written by build and records where its
// parts are.
func mapFile(file []byte) layout {
	l := layout{version: len(Magic)}
	p := headerFixed
	p += 1 + int(file[p]) + 4 + 8 + 8 + 4
	for {
		l.boundaries = append(l.boundaries, p)
		if file[p] == tagEnd {
			return l
		}
		p += 2 + int(file[p+1])
		for {
			l.boundaries = append(l.boundaries, p)
			n := int(binary.BigEndian.Uint32(file[p:]))
			if n == 0 {
				p += 4 + 8
				break
			}
			l.chunkData = append(l.chunkData, [2]int{p + 4, p + 4 + n})
			p += 4 + n + 4
		}
	}
}

func inChunkData(l layout, i int) bool {
	for _, c := range l.chunkData {
		if i >= c[0] && i < c[1] {
			return true
		}
	}
	return false
}

// Every single-bit flip outside chunk data, and in a sample of chunk data
// bytes, is refused: ErrFormatVersion in the version field, ErrChecksum in
// chunk data (before any of it is handed out), ErrCorrupt everywhere else.
func TestEveryBitFlipRefused(t *testing.T) {
	h, secs := sample()
	file := build(t, h, secs, 1<<20)
	l := mapFile(file)
	for i := range file {
		if inChunkData(l, i) && i%211 != 0 {
			continue
		}
		for bit := range 8 {
			bad := bytes.Clone(file)
			bad[i] ^= 1 << bit
			_, _, err := readAll(bad)
			want := ErrCorrupt
			switch {
			case i >= l.version && i < l.version+2:
				want = ErrFormatVersion
			case inChunkData(l, i):
				want = ErrChecksum
			}
			if !errors.Is(err, want) {
				t.Fatalf("bit %d of byte %d of %d flipped: err = %v, want %v", bit, i, len(file), err, want)
			}
		}
	}
}

// A file cut anywhere, and in particular at every record boundary, is
// ErrTruncated.
func TestEveryTruncationRefused(t *testing.T) {
	h, secs := sample()
	file := build(t, h, secs, 1<<20)
	l := mapFile(file)
	if len(l.boundaries) < 10 {
		t.Fatalf("only %d boundaries mapped", len(l.boundaries))
	}
	for _, i := range l.boundaries {
		if _, _, err := readAll(file[:i]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at boundary %d: err = %v, want ErrTruncated", i, err)
		}
	}
	// Every cut of a file small enough to make that quick.
	secs[2].data = pattern(300)
	file = build(t, h, secs, 1<<20)
	for i := range len(file) {
		if _, _, err := readAll(file[:i]); !errors.Is(err, ErrTruncated) || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d of %d: err = %v, want ErrTruncated", i, len(file), err)
		}
	}
}

func TestTrailingBytesRefused(t *testing.T) {
	h, secs := sample()
	file := append(build(t, h, secs, 1<<20), 0)
	if _, _, err := readAll(file); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}

// patch overwrites a field and repairs every checksum after it, so that
// the reader's own structural checks are what refuses the file.
func patch(file []byte, at int, val []byte) []byte {
	bad := bytes.Clone(file)
	copy(bad[at:], val)
	end := len(bad) - 4
	binary.BigEndian.PutUint32(bad[end:], crc32.Checksum(bad[:end], castagnoli))
	return bad
}

func TestWrongLengthsRefused(t *testing.T) {
	h := Header{App: "t", Created: created}
	file := build(t, h, []section{{"a", []byte("abcdef")}}, 100)
	l := mapFile(file)
	chunk := l.boundaries[1] // the only chunk's length field
	end := l.boundaries[2]   // the section end: zero length, then the section length
	u32 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	u64 := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	for name, bad := range map[string][]byte{
		"chunk longer than the limit": patch(file, chunk, u32(MaxChunk+1)),
		"chunk of 4 GiB":              patch(file, chunk, u32(math.MaxUint32)),
		"chunk longer than the data":  patch(file, chunk, u32(7)),
		"chunk shorter than the data": patch(file, chunk, u32(5)),
		"section length off by one":   patch(file, end+4, u64(7)),
		"section length huge":         patch(file, end+4, u64(math.MaxUint64)),
		"end record: section count":   patch(file, len(file)-16, u32(2)),
		"end record: total length":    patch(file, len(file)-12, u64(5)),
		"unknown record tag":          patch(file, l.boundaries[0], []byte{'X'}),
		"empty section name":          patch(file, l.boundaries[0]+1, []byte{0}),
	} {
		if _, _, err := readAll(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	if _, _, err := readAll(patch(file, 0, nil)); err != nil {
		t.Fatalf("patch broke a good file: %v", err)
	}
}

// A length field that claims gigabytes is refused before anything is
// allocated for it.
func TestHugeLengthDoesNotAllocate(t *testing.T) {
	file := build(t, Header{App: "t"}, []section{{"a", []byte("x")}}, 100)
	l := mapFile(file)
	bad := patch(file, l.boundaries[1], binary.BigEndian.AppendUint32(nil, math.MaxUint32))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := readAll(bad)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("refusing a 4 GiB chunk allocated %d bytes", grew)
	}
}

func TestNotAStateFile(t *testing.T) {
	for _, in := range []string{"", "PDFS\x00\x01", "{\"json\": true}", Magic[:5]} {
		if _, err := NewReader(bytes.NewReader([]byte(in))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: err = %v, want ErrCorrupt", in, err)
		}
	}
}

// A read error is the reader's, not corruption: the file may be fine.
func TestReadErrorIsNotCorrupt(t *testing.T) {
	h, secs := sample()
	file := build(t, h, secs, 1<<20)
	boom := errors.New("disk on fire")
	_, _, err := readAll(append(bytes.Clone(file[:len(file)/2]), 0)[:len(file)/2])
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("half a file: err = %v", err)
	}
	r := io.MultiReader(bytes.NewReader(file[:len(file)/2]), iotestErr{boom})
	sr, err := NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		if _, err = sr.Next(); err == nil {
			_, err = io.ReadAll(sr)
		}
	}
	if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want the read error and not ErrCorrupt", err)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

func FuzzReader(f *testing.F) {
	h, secs := sample()
	secs[2].data = pattern(100)
	f.Add(build(f, h, secs, 1<<20))
	f.Add(build(f, Header{App: "a"}, nil, 1))
	f.Fuzz(func(t *testing.T, file []byte) {
		h, secs, err := readAll(file)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFormatVersion) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		// Whatever reads cleanly is exactly what the Writer writes for it.
		if again := build(t, h, secs, 4096); !bytes.Equal(again, file) {
			t.Fatal(fmt.Sprintf("re-encoding a file that read cleanly gave other bytes (%d vs %d)", len(again), len(file)))
		}
	})
}
