package wshandoff

// frames follows one direction of a WebSocket stream (RFC 6455, section
// 5.2) from the bytes that pass, without keeping any of them: where the
// current frame ends, whether a fragmented data message is open, and
// whether a close frame has passed. It never validates: the library on
// each end does, and a stream it rejects is closed, not moved.
type frames struct {
	hdr       [maxHeader]byte
	hn        int   // header bytes of the current frame seen so far
	need      int   // its header's length, once its second byte is known; else 2
	remaining int64 // payload bytes of the current frame still to pass
	inPayload bool

	fragmented bool   // a text or binary frame without FIN passed; its final continuation not yet
	closed     bool   // a close frame's header passed
	ending     bool   // the current frame is a data message's last
	messages   uint64 // data messages that passed whole
}

const (
	maxHeader    = 14 // 2 + 8 (extended length) + 4 (mask key)
	opContinue   = 0x0
	opClose      = 0x8
	finBit       = 0x80
	maskBit      = 0x80
	opcodeMask   = 0x0f
	controlFirst = 0x8
)

func newFrames() frames { return frames{need: 2} }

// atFrameStart reports whether the next byte begins a frame.
func (f *frames) atFrameStart() bool { return !f.inPayload && f.hn == 0 }

// atMessageBoundary reports whether the next byte begins a frame outside
// any message: what passed so far is whole messages and control frames.
func (f *frames) atMessageBoundary() bool { return f.atFrameStart() && !f.fragmented }

// limit is how many of n bytes may pass before the next point where the
// stream's state changes (the end of a header part or of a payload), so
// that a reader is never given bytes beyond the frame it is in.
func (f *frames) limit(n int) int {
	var l int64
	if f.inPayload {
		l = f.remaining
	} else {
		l = int64(f.need - f.hn)
	}
	if l < int64(n) {
		return int(l)
	}
	return n
}

// feed advances the state over p, the bytes that passed.
func (f *frames) feed(p []byte) {
	for len(p) > 0 {
		if f.inPayload {
			k := f.remaining
			if int64(len(p)) < k {
				k = int64(len(p))
			}
			f.remaining -= k
			p = p[k:]
			if f.remaining == 0 {
				f.inPayload = false
				f.endMessage()
			}
			continue
		}
		k := copy(f.hdr[f.hn:f.need], p)
		f.hn += k
		p = p[k:]
		if f.hn == 2 && f.need == 2 {
			f.need = 2 + extLen(f.hdr[1]&0x7f)
			if f.hdr[1]&maskBit != 0 {
				f.need += 4
			}
		}
		if f.hn == f.need {
			f.endHeader()
		}
	}
}

// endHeader takes in a complete header.
func (f *frames) endHeader() {
	b0, n := f.hdr[0], int64(f.hdr[1]&0x7f)
	switch n {
	case 126:
		n = int64(f.hdr[2])<<8 | int64(f.hdr[3])
	case 127:
		n = 0
		for _, b := range f.hdr[2:10] {
			n = n<<8 | int64(b)
		}
		if n < 0 { // the library rejects it; never wait for so many bytes
			n = 1<<63 - 1
		}
	}
	op, fin := b0&opcodeMask, b0&finBit != 0
	switch {
	case op == opClose:
		f.closed = true
	case op >= controlFirst:
	case op == opContinue:
		if fin {
			f.fragmented = false
		}
	default: // text, binary (and reserved data opcodes, which end the connection)
		f.fragmented = !fin
	}
	f.ending = op < controlFirst && fin
	f.hn, f.need, f.remaining, f.inPayload = 0, 2, n, n > 0
	if n == 0 {
		f.endMessage()
	}
}

// endMessage counts a data message once its last frame has passed.
func (f *frames) endMessage() {
	if f.ending {
		f.messages++
		f.ending = false
	}
}

func extLen(len7 byte) int {
	switch len7 {
	case 126:
		return 2
	case 127:
		return 8
	}
	return 0
}

// opcodeAt returns the opcode of the frame that p begins, for a stream at
// a frame start.
func opcodeAt(p []byte) byte {
	if len(p) == 0 {
		return 0xff
	}
	return p[0] & opcodeMask
}
