package wire

import (
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// StateWriter streams the application's state as STATE frames, so that a
// large state never sits whole in memory twice. Close sends STATE_END with
// the length and CRC-32C of everything written.
type StateWriter struct {
	ch    *Channel
	buf   []byte
	total uint64
	crc   hash.Hash32
}

func NewStateWriter(ch *Channel) *StateWriter {
	return &StateWriter{ch: ch, buf: make([]byte, 0, maxPacketData), crc: crc32.New(castagnoli)}
}

func (w *StateWriter) Write(p []byte) (int, error) {
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

func (w *StateWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	w.crc.Write(w.buf)
	w.total += uint64(len(w.buf))
	err := w.ch.Send(State(w.buf), nil)
	w.buf = w.buf[:0]
	return err
}

// Total is how many bytes have been written.
func (w *StateWriter) Total() uint64 { return w.total + uint64(len(w.buf)) }

// Close sends what is buffered and STATE_END; it does not close the channel.
func (w *StateWriter) Close() error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.ch.Send(StateEnd{Total: w.total, CRC: w.crc.Sum32()}, nil)
}

// StateReader reads the STATE frames of the old process up to STATE_END,
// which it checks against what arrived.
type StateReader struct {
	ch    *Channel
	buf   []byte
	total uint64
	crc   hash.Hash32
	done  bool
}

func NewStateReader(ch *Channel) *StateReader {
	return &StateReader{ch: ch, crc: crc32.New(castagnoli)}
}

// Total is how many bytes of state have arrived so far.
func (r *StateReader) Total() uint64 { return r.total }

func (r *StateReader) Read(p []byte) (int, error) {
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

func (r *StateReader) nextFrame() error {
	m, err := r.ch.RecvNoFds()
	if err != nil {
		return fmt.Errorf("handoff: receive state: %w", err)
	}
	switch m.Type {
	case TypeState:
		r.crc.Write(m.Payload)
		r.total += uint64(len(m.Payload))
		r.buf = m.Payload
		return nil
	case TypeStateEnd:
		r.done = true
		return r.check(m.Payload)
	}
	return Errorf("%s inside the state stream", m.Type)
}

func (r *StateReader) check(p []byte) error {
	var end StateEnd
	if err := end.Decode(p); err != nil {
		return err
	}
	if end.Total != r.total || end.CRC != r.crc.Sum32() {
		return Errorf("state stream damaged: %d bytes with CRC %08x received, %d bytes with CRC %08x sent",
			r.total, r.crc.Sum32(), end.Total, end.CRC)
	}
	return nil
}

// Drain reads to STATE_END, so that the stream is checked even if the
// application's LoadState stopped early.
func (r *StateReader) Drain() error {
	for !r.done {
		r.buf = nil
		if err := r.nextFrame(); err != nil {
			return err
		}
	}
	r.buf = nil
	return nil
}
