//go:build linux

package handoff

import (
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stateWriter streams the application's state as STATE frames, so that a
// large state never sits whole in memory twice. close sends STATE_END with
// the length and CRC-32C of everything written.
type stateWriter struct {
	ch    *channel
	buf   []byte
	total uint64
	crc   hash.Hash32
}

func newStateWriter(ch *channel) *stateWriter {
	return &stateWriter{ch: ch, buf: make([]byte, 0, maxPacketData), crc: crc32.New(castagnoli)}
}

func (w *stateWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (w *stateWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	w.crc.Write(w.buf)
	w.total += uint64(len(w.buf))
	err := w.ch.send(frameState, w.buf, nil)
	w.buf = w.buf[:0]
	return err
}

func (w *stateWriter) close() error {
	if err := w.flush(); err != nil {
		return err
	}
	end := binary.BigEndian.AppendUint64(nil, w.total)
	end = binary.BigEndian.AppendUint32(end, w.crc.Sum32())
	return w.ch.send(frameStateEnd, end, nil)
}

// stateReader reads the STATE frames of the old process up to STATE_END,
// which it checks against what arrived.
type stateReader struct {
	ch    *channel
	buf   []byte
	total uint64
	crc   hash.Hash32
	done  bool
}

func newStateReader(ch *channel) *stateReader {
	return &stateReader{ch: ch, crc: crc32.New(castagnoli)}
}

func (r *stateReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		if err := r.nextFrame(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *stateReader) nextFrame() error {
	typ, p, err := recvNoFds(r.ch)
	if err != nil {
		return fmt.Errorf("handoff: receive state: %w", err)
	}
	switch typ {
	case frameState:
		r.crc.Write(p)
		r.total += uint64(len(p))
		r.buf = p
		return nil
	case frameStateEnd:
		r.done = true
		return r.check(p)
	}
	return protoErr("%s inside the state stream", frameName(typ))
}

func (r *stateReader) check(p []byte) error {
	if len(p) != 12 {
		return protoErr("STATE_END of %d bytes", len(p))
	}
	total, sum := binary.BigEndian.Uint64(p), binary.BigEndian.Uint32(p[8:])
	if total != r.total || sum != r.crc.Sum32() {
		return protoErr("state stream damaged: %d bytes with CRC %08x received, %d bytes with CRC %08x sent",
			r.total, r.crc.Sum32(), total, sum)
	}
	return nil
}

// drain reads to STATE_END, so that the stream is checked even if the
// application's LoadState stopped early.
func (r *stateReader) drain() error {
	for !r.done {
		r.buf = nil
		if err := r.nextFrame(); err != nil {
			return err
		}
	}
	r.buf = nil
	return nil
}
