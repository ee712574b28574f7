package httphandoff

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// RFC 9113 §6.8's graceful shutdown of an HTTP/2 connection: a first
// GOAWAY whose last stream id is 2^31-1 (no new streams, please), then,
// once at least a round trip has passed, the final GOAWAY with the real
// last stream id. golang.org/x/net/http2 sends only the final one, named
// after the highest stream it has processed: a stream the client sent
// before that GOAWAY reached it is refused. So h2Conn sits between x/net
// and the TLS connection: it writes the first GOAWAY and a PING between
// two of x/net's frames, sees the client's PING ACK go by, and only then
// starts x/net's graceful shutdown, whose GOAWAY then names every stream
// the client sent before it read the first one.

// The client's connection preface, which comes before its first frame.
const clientPrefaceLen = len(http2.ClientPreface)

const frameHeaderLen = 9

// pingAckTimeout bounds the wait for the PING ACK of a client that never
// answers: x/net's own PingTimeout default. A client that answers
// (every one that follows RFC 9113 must) never waits for it.
const pingAckTimeout = 15 * time.Second

// frame is what frameScanner reports of a frame that ended.
type frame struct {
	typ    http2.FrameType
	flags  http2.Flags
	stream uint32
	ping   [8]byte // a PING's payload, if it is 8 bytes long
}

// frameScanner follows the frame boundaries of one direction of an
// HTTP/2 byte stream, as it goes by in pieces of any size. It reads
// nothing but the frame headers and PING payloads, never fails and
// never allocates: a stream that is not HTTP/2 gives frames of no
// meaning, which x/net rejects on its own.
type frameScanner struct {
	preface int // bytes of the client preface still to come
	hdr     [frameHeaderLen]byte
	nhdr    int // bytes of hdr received
	left    int // payload bytes of the current frame still to come
	cur     frame
	npay    int  // payload bytes received of the current frame
	frames  uint // frames that ended
}

// next consumes p up to the end of the current frame (or all of p if it
// ends later) and returns how many bytes it consumed and, if a frame
// ended there, that frame.
func (s *frameScanner) next(p []byte) (int, *frame) {
	n := 0
	if s.preface > 0 {
		n = min(s.preface, len(p))
		s.preface -= n
		p = p[n:]
	}
	for s.left == 0 && len(p) > 0 { // in a header
		k := copy(s.hdr[s.nhdr:], p)
		s.nhdr += k
		n += k
		p = p[k:]
		if s.nhdr < frameHeaderLen {
			return n, nil
		}
		s.startFrame()
		if s.left == 0 {
			return n, s.endFrame()
		}
	}
	if len(p) == 0 || s.left == 0 {
		return n, nil
	}
	k := min(s.left, len(p))
	if s.cur.typ == http2.FramePing && s.npay < len(s.cur.ping) {
		copy(s.cur.ping[s.npay:], p[:k])
	}
	s.npay += k
	s.left -= k
	n += k
	if s.left == 0 {
		return n, s.endFrame()
	}
	return n, nil
}

func (s *frameScanner) startFrame() {
	h := s.hdr[:]
	s.left = int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	s.cur = frame{typ: http2.FrameType(h[3]), flags: http2.Flags(h[4]), stream: binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)}
	if s.cur.typ == http2.FramePing && s.left != len(s.cur.ping) {
		s.cur.typ = 0xff // a malformed PING: matches nothing (x/net rejects it)
	}
	s.npay = 0
	s.nhdr = 0
}

func (s *frameScanner) endFrame() *frame {
	s.frames++
	f := s.cur
	return &f
}

// atBoundary says whether the stream is between two frames (and past
// the preface).
func (s *frameScanner) atBoundary() bool {
	return s.preface == 0 && s.nhdr == 0 && s.left == 0
}

// goAwayFrames are the first GOAWAY (last stream 2^31-1, NO_ERROR) and
// a PING with data, as bytes on the wire.
func goAwayFrames(data [8]byte) []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil) // a bytes.Buffer takes all
	_ = fr.WritePing(false, data)
	return b.Bytes()
}

// h2Conn is the connection x/net serves HTTP/2 on: the TLS connection,
// with the two-step GOAWAY of RFC 9113 §6.8 (see the top of this file).
// x/net writes whole frames in one or more Writes (never two writers at
// once) and reads each frame with io.ReadFull of its header, then of its
// payload, and reads the next one only once it has processed this one.
type h2Conn struct {
	net.Conn
	ping [8]byte // our PING's data
	// final starts x/net's graceful shutdown of this connection (its
	// final GOAWAY, naming the last stream it processed).
	final func()

	wmu     sync.Mutex
	out     frameScanner // what x/net wrote
	pending []byte       // our frames, to write at the next boundary
	gone    bool         // x/net wrote a GOAWAY: ours must not follow it

	// Read does not take wmu: a Write may block on a client that does
	// not read.
	in      frameScanner // what the client sent
	wrote   atomic.Bool  // our frames are being written, or are
	acked   atomic.Bool  // the client's ACK of our PING went by
	once    sync.Once    // final
	started sync.Once    // goAway
	timer   atomic.Pointer[time.Timer]
}

func newH2Conn(nc net.Conn, final func()) *h2Conn {
	c := &h2Conn{Conn: nc, final: final}
	c.in.preface = clientPrefaceLen
	_, _ = rand.Read(c.ping[:]) // never fails (crypto/rand); zeros would still work
	return c
}

// goAway starts the graceful shutdown: the first GOAWAY and the PING go
// out at the next frame boundary, from here if x/net is not writing; the
// final one once the client has answered the PING. It does not wait for
// a Write that blocks on a client that does not read.
func (c *h2Conn) goAway() {
	c.started.Do(func() {
		c.wmu.Lock()
		c.pending = goAwayFrames(c.ping)
		c.wmu.Unlock()
		go c.flush()
	})
}

// flush writes our frames if the stream is at a boundary and x/net has
// started (its SETTINGS, the server's preface, must come first).
func (c *h2Conn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.gone {
		c.pending = nil
	}
	if c.pending == nil || !c.out.atBoundary() || c.out.frames == 0 {
		return
	}
	c.wrote.Store(true) // before: the client may answer before Write returns
	_, err := c.Conn.Write(c.pending)
	c.sentLocked(err)
}

// sentLocked records that our frames went out (or could not: then x/net
// fails too, and the connection ends), and bounds the wait for the ACK.
func (c *h2Conn) sentLocked(err error) {
	c.pending = nil
	if err == nil {
		c.timer.Store(time.AfterFunc(pingAckTimeout, c.finish))
	}
}

// Write writes x/net's bytes, with our frames between two of its frames
// if they wait.
func (c *h2Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.pending != nil && c.gone {
		c.pending = nil
	}
	if c.pending == nil {
		c.scanOut(p)
		return c.Conn.Write(p)
	}
	at := -1 // where our frames go in p
	if c.out.atBoundary() && c.out.frames > 0 {
		at = 0
	}
	for off := 0; off < len(p) && at < 0; {
		n, f := c.out.next(p[off:])
		off += n
		if f != nil {
			c.sawOut(f)
			if !c.gone {
				at = off
			}
		}
	}
	if c.gone {
		c.pending = nil
	}
	if at < 0 || c.gone { // no boundary here: at a later Write
		return c.Conn.Write(p)
	}
	c.scanOut(p[at:])
	ours := len(c.pending)
	b := make([]byte, 0, len(p)+ours)
	b = append(append(append(b, p[:at]...), c.pending...), p[at:]...)
	c.wrote.Store(true)
	n, err := c.Conn.Write(b)
	c.sentLocked(err)
	return theirs(n, at, ours), err
}

// theirs maps n bytes written of x/net's bytes, with ours bytes of ours
// inserted at at, back to a count of x/net's bytes.
func theirs(n, at, ours int) int {
	switch {
	case n <= at:
		return n
	case n < at+ours:
		return at
	default:
		return n - ours
	}
}

func (c *h2Conn) scanOut(p []byte) {
	for len(p) > 0 {
		n, f := c.out.next(p)
		p = p[n:]
		if f != nil {
			c.sawOut(f)
		}
	}
}

// sawOut notes a frame x/net wrote: after its own GOAWAY (an error, its
// idle timeout, the client's GOAWAY), ours, with a higher last stream,
// must not follow (RFC 9113 §6.8: the last stream id never increases).
func (c *h2Conn) sawOut(f *frame) {
	if f.typ == http2.FrameGoAway {
		c.gone = true
	}
}

// Read reads the client's bytes for x/net. Once our PING's ACK went by,
// the next Read comes from x/net only after it has processed every frame
// before the ACK: the streams the client opened before it read our first
// GOAWAY are known, and the final GOAWAY names them.
func (c *h2Conn) Read(p []byte) (int, error) {
	if c.acked.Load() {
		c.finish()
	}
	n, err := c.Conn.Read(p)
	for q := p[:n]; len(q) > 0; {
		k, f := c.in.next(q)
		q = q[k:]
		if f != nil && f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) && f.ping == c.ping && c.wrote.Load() {
			c.acked.Store(true)
		}
	}
	return n, err
}

// finish starts x/net's graceful shutdown, once.
func (c *h2Conn) finish() {
	c.once.Do(func() {
		if t := c.timer.Load(); t != nil {
			t.Stop()
		}
		c.final()
	})
}
