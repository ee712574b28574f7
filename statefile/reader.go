package statefile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"
)

// Reader reads one state file from an io.Reader as it goes, checking every
// chunk's CRC before handing out its bytes, so a damaged byte never reaches
// the application's decoder. The file's own checksum and its end record are
// checked when Next returns io.EOF; only then is the file known whole.
// Anything decoded before that must not be applied yet: Set.Load follows
// this rule.
//
// The Reader never allocates more than MaxChunk for a chunk, whatever
// lengths the input claims. After an error every call returns that error.
type Reader struct {
	r      io.Reader
	crc    hash.Hash32
	offset int64 // bytes consumed, for error messages
	h      Header

	scratch   [16]byte
	chunk     []byte // reused chunk buffer
	data      []byte // unread bytes of the current chunk
	inSection bool
	secName   string
	secLen    uint64
	sections  uint32
	total     uint64
	done      bool
	err       error
}

// NewReader reads and checks the header of the file r holds.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{r: r, crc: crc32.New(castagnoli)}
	sr.h, sr.err = sr.readHeader()
	if sr.err != nil {
		return nil, sr.err
	}
	return sr, nil
}

// Header returns the file's header.
func (r *Reader) Header() Header { return r.h }

func (r *Reader) readHeader() (Header, error) {
	var h Header
	fixed, err := r.read(headerFixed)
	if err != nil {
		return h, err
	}
	if string(fixed[:len(Magic)]) != Magic {
		return h, fmt.Errorf("%w: not a state file (magic %q)", ErrCorrupt, fixed[:len(Magic)])
	}
	if v := binary.BigEndian.Uint16(fixed[len(Magic):]); v != FormatVersion {
		return h, fmt.Errorf("%w: version %d, this program reads version %d", ErrFormatVersion, v, FormatVersion)
	}
	if f := binary.BigEndian.Uint16(fixed[len(Magic)+2:]); f != 0 {
		return h, fmt.Errorf("%w: unknown header flags %#04x", ErrCorrupt, f)
	}
	if h.App, err = r.readName("application name"); err != nil {
		return h, err
	}
	rest, err := r.read(4 + 8 + 8)
	if err != nil {
		return h, err
	}
	h.Schema = binary.BigEndian.Uint32(rest)
	h.Generation = binary.BigEndian.Uint64(rest[4:])
	h.Created = time.Unix(0, int64(binary.BigEndian.Uint64(rest[12:])))
	want := r.crc.Sum32()
	if got, err := r.readUint32(); err != nil {
		return h, err
	} else if got != want {
		return h, fmt.Errorf("%w: header CRC %08x, bytes give %08x", ErrChecksum, got, want)
	}
	return h, nil
}

// Next skips what is left of the current section, checking it, and
// returns the name of the next one. At the end record it checks the
// section count, the total length and the file's checksum, requires the
// input to end there, and returns io.EOF: the file is whole.
func (r *Reader) Next() (string, error) {
	if r.err != nil {
		return "", r.err
	}
	if r.done {
		return "", io.EOF
	}
	name, err := r.next()
	if err != nil {
		if err != io.EOF {
			r.err = err
		}
		return "", err
	}
	return name, nil
}

func (r *Reader) next() (string, error) {
	for r.inSection {
		r.data = nil
		if err := r.nextChunk(); err != nil && err != io.EOF {
			return "", err
		}
	}
	tag, err := r.read(1)
	if err != nil {
		return "", err
	}
	switch tag[0] {
	case tagSection:
		name, err := r.readName("section name")
		if err != nil {
			return "", err
		}
		r.inSection, r.secName, r.secLen = true, name, 0
		r.sections++
		return name, nil
	case tagEnd:
		if err := r.readEnd(); err != nil {
			return "", err
		}
		r.done = true
		return "", io.EOF
	}
	return "", r.corrupt("unknown record tag %#02x", tag[0])
}

func (r *Reader) readEnd() error {
	p, err := r.read(4 + 8)
	if err != nil {
		return err
	}
	sections, total := binary.BigEndian.Uint32(p), binary.BigEndian.Uint64(p[4:])
	want := r.crc.Sum32()
	got, err := r.readUint32()
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: file CRC %08x, bytes give %08x", ErrChecksum, got, want)
	}
	if sections != r.sections || total != r.total {
		return r.corrupt("end record says %d sections of %d bytes, file has %d of %d",
			sections, total, r.sections, r.total)
	}
	if n, _ := io.ReadFull(r.r, r.scratch[:1]); n > 0 {
		return r.corrupt("bytes after the end record")
	}
	return nil
}

// Read reads the current section's bytes; it returns io.EOF at the
// section's end.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if !r.inSection {
		return 0, io.EOF
	}
	for len(r.data) == 0 {
		if err := r.nextChunk(); err != nil {
			if err != io.EOF {
				r.err = err
			}
			return 0, err
		}
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// nextChunk reads and checks the next chunk of the current section into
// r.data; at the section's end it checks the section length and returns
// io.EOF.
func (r *Reader) nextChunk() error {
	n, err := r.readUint32()
	if err != nil {
		return err
	}
	if n == 0 {
		return r.endOfSection()
	}
	if n > MaxChunk {
		return r.corrupt("chunk of %d bytes in section %q, the limit is %d", n, r.secName, MaxChunk)
	}
	if cap(r.chunk) < int(n) {
		r.chunk = make([]byte, n)
	}
	data := r.chunk[:n]
	if err := r.readInto(data); err != nil {
		return err
	}
	sum, err := r.readUint32()
	if err != nil {
		return err
	}
	if got := crc32.Checksum(data, castagnoli); got != sum {
		return fmt.Errorf("%w: chunk of %d bytes in section %q at offset %d", ErrChecksum, n, r.secName, r.offset-int64(n)-8)
	}
	r.data = data
	r.secLen += uint64(n)
	r.total += uint64(n)
	return nil
}

func (r *Reader) endOfSection() error {
	p, err := r.read(8)
	if err != nil {
		return err
	}
	if n := binary.BigEndian.Uint64(p); n != r.secLen {
		return r.corrupt("section %q says %d bytes, its chunks hold %d", r.secName, n, r.secLen)
	}
	r.inSection = false
	return io.EOF
}

func (r *Reader) readName(what string) (string, error) {
	n, err := r.read(1)
	if err != nil {
		return "", err
	}
	if n[0] == 0 {
		return "", r.corrupt("empty %s", what)
	}
	p, err := r.read(int(n[0]))
	return string(p), err
}

func (r *Reader) readUint32() (uint32, error) {
	p, err := r.read(4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(p), nil
}

// read reads n bytes (at most 255 + a few) into scratch or a fresh slice.
func (r *Reader) read(n int) ([]byte, error) {
	var p []byte
	if n <= len(r.scratch) {
		p = r.scratch[:n]
	} else {
		p = make([]byte, n)
	}
	return p, r.readInto(p)
}

// readInto fills p from the input and adds it to the file checksum. An
// input that ends early is ErrTruncated.
func (r *Reader) readInto(p []byte) error {
	n, err := io.ReadFull(r.r, p)
	r.crc.Write(p[:n])
	r.offset += int64(n)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w at offset %d", ErrTruncated, r.offset)
	case err != nil:
		return fmt.Errorf("statefile: read: %w", err)
	}
	return nil
}

func (r *Reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s (offset %d)", ErrCorrupt, fmt.Sprintf(format, args...), r.offset)
}
