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

// writeChunk is the chunk size the Writer emits: big enough that framing
// costs nothing, small enough that the buffer does not matter.
const writeChunk = 64 << 10

// Writer writes one state file to an io.Writer as it goes: a chunk of at
// most 64 KiB is all it holds, so a state of any size is written without a
// second copy of it in memory.
//
// Call Section to start each section, write its bytes, and Close to write
// the end record. The Writer does not close the io.Writer it was given.
// After an error every call returns that error.
type Writer struct {
	w   io.Writer
	crc hash.Hash32 // over every byte written, for the end record

	// buf holds the chunk being filled behind a 4-byte length slot, so that
	// a chunk goes out in one Write.
	buf       []byte
	inSection bool
	secLen    uint64
	sections  uint32
	total     uint64
	err       error
}

// NewWriter writes the header for h to w and returns a Writer for the
// sections. A zero h.Created is taken as now.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if err := checkName("application name", h.App); err != nil {
		return nil, err
	}
	if h.Created.IsZero() {
		h.Created = time.Now()
	}
	sw := &Writer{w: w, crc: crc32.New(castagnoli)}
	sw.write(appendHeader(nil, h))
	return sw, sw.err
}

func appendHeader(b []byte, h Header) []byte {
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint16(b, FormatVersion)
	b = binary.BigEndian.AppendUint16(b, 0) // flags: none defined
	b = appendName(b, h.App)
	b = binary.BigEndian.AppendUint32(b, h.Schema)
	b = binary.BigEndian.AppendUint64(b, h.Generation)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Created.UnixNano()))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func appendName(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func checkName(what, s string) error {
	if len(s) == 0 || len(s) > 255 {
		return fmt.Errorf("statefile: %s %q must be 1 to 255 bytes", what, s)
	}
	return nil
}

// Section ends the current section, if any, and starts one called name
// (1 to 255 bytes). Names need not be unique; readers see them in order.
func (w *Writer) Section(name string) error {
	if err := checkName("section name", name); err != nil {
		return err
	}
	w.endSection()
	w.write(appendName([]byte{tagSection}, name))
	w.inSection = true
	w.sections++
	return w.err
}

// Write adds p to the current section.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err == nil && !w.inSection {
		w.err = errors.New("statefile: Write before Section")
	}
	n := 0
	for len(p) > 0 && w.err == nil {
		if w.buf == nil {
			w.buf = make([]byte, 4, 4+writeChunk+4)
		}
		k := min(len(p), 4+writeChunk-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(w.buf) == 4+writeChunk {
			w.flush()
		}
	}
	return n, w.err
}

// flush writes the buffered chunk: length, data, CRC-32C of the data.
func (w *Writer) flush() {
	data := len(w.buf) - 4
	if data <= 0 || w.err != nil {
		return
	}
	binary.BigEndian.PutUint32(w.buf, uint32(data))
	w.buf = binary.BigEndian.AppendUint32(w.buf, crc32.Checksum(w.buf[4:], castagnoli))
	w.write(w.buf)
	w.secLen += uint64(data)
	w.total += uint64(data)
	w.buf = w.buf[:4]
}

// endSection writes the open section's last chunk, the zero length that
// ends it, and its length.
func (w *Writer) endSection() {
	if !w.inSection {
		return
	}
	w.flush()
	end := binary.BigEndian.AppendUint32(nil, 0)
	w.write(binary.BigEndian.AppendUint64(end, w.secLen))
	w.inSection, w.secLen = false, 0
}

// Close ends the last section and writes the end record: the number of
// sections, the total payload length and the CRC-32C of the whole file.
func (w *Writer) Close() error {
	w.endSection()
	end := []byte{tagEnd}
	end = binary.BigEndian.AppendUint32(end, w.sections)
	end = binary.BigEndian.AppendUint64(end, w.total)
	w.write(end)
	if w.err == nil {
		w.write(binary.BigEndian.AppendUint32(nil, w.crc.Sum32()))
		// Any further call is a bug; say so instead of writing a second end.
		w.err = errors.New("statefile: Writer is closed")
		return nil
	}
	return w.err
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	w.crc.Write(p)
	if _, err := w.w.Write(p); err != nil {
		w.err = fmt.Errorf("statefile: write: %w", err)
	}
}
