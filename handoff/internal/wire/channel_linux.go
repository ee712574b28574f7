package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Channel carries frames over a SOCK_SEQPACKET Unix socket. A frame larger
// than one packet is split into packets flagged "more"; a frame's fds ride
// on its first packet. Every fd it receives is close-on-exec: the net
// package receives with MSG_CMSG_CLOEXEC.
//
// Ownership: the channel owns its socket. fds a receive returns belong to
// the caller, who must close every one it does not keep; fds given to Send
// stay the caller's.
//
// One goroutine may send while another receives: each has its own buffers.
type Channel struct {
	c   *net.UnixConn
	enc []byte // the frame being sent
	out []byte // the packet being sent
	pkt []byte // the packet last received
	oob []byte
}

// NewChannel returns a channel over c, which it owns from now on.
func NewChannel(c *net.UnixConn) *Channel {
	return &Channel{c: c, out: make([]byte, headerLen+maxPacketData), pkt: make([]byte, headerLen+maxPacketData),
		oob: make([]byte, oobSpace(MaxFdsPerMsg))}
}

// Conn returns the channel's socket, for a test that plays a peer breaking
// the protocol with bytes no frame type would make.
func (ch *Channel) Conn() *net.UnixConn { return ch.c }

// Close closes the socket.
func (ch *Channel) Close() error { return ch.c.Close() }

// SetDeadline bounds every send and receive until the next call.
func (ch *Channel) SetDeadline(t time.Time) { _ = ch.c.SetDeadline(t) }

// aLongTimeAgo is a deadline that has passed, to wake a blocked call at once.
var aLongTimeAgo = time.Unix(1, 0)

// BindDeadline makes ctx's deadline the channel's and wakes a blocked send
// or receive when ctx ends. The returned func unbinds the wake-up (the
// deadline stays).
func (ch *Channel) BindDeadline(ctx context.Context) (unbind func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		ch.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { ch.SetDeadline(aLongTimeAgo) })
}

// Send writes frame f with fds attached to its first packet.
func (ch *Channel) Send(f Encoder, fds []int) error {
	if len(fds) > MaxFdsPerMsg {
		return fmt.Errorf("handoff: %d fds in one frame, at most %d", len(fds), MaxFdsPerMsg)
	}
	ch.enc = f.Append(ch.enc[:0])
	payload, oob := ch.enc, rightsOOB(fds)
	for first := true; first || len(payload) > 0; first = false {
		n := min(len(payload), maxPacketData)
		h := header{typ: f.Type(), size: uint32(n)}
		if n < len(payload) {
			h.flags = flagMore
		}
		pkt := ch.out[:headerLen+n]
		putHeader(pkt, h)
		copy(pkt[headerLen:], payload[:n])
		if _, _, err := ch.c.WriteMsgUnix(pkt, oob, nil); err != nil {
			return fmt.Errorf("handoff: send %s: %w", f.Type(), err)
		}
		payload, oob = payload[n:], nil
	}
	return nil
}

// Expect receives the next frame into f: it must be of f's type, without
// fds. The peer's ABORT is an error wrapping ErrRejected.
func (ch *Channel) Expect(f Decoder) error {
	m, err := ch.RecvNoFds()
	if err != nil {
		return err
	}
	return m.Expect(f)
}

// RecvNoFds receives a frame that must carry no fds, and turns ABORT into
// an error wrapping ErrRejected.
func (ch *Channel) RecvNoFds() (Msg, error) {
	m, err := ch.Recv()
	if err != nil {
		return Msg{}, err
	}
	if len(m.Fds) > 0 {
		CloseFds(m.Fds)
		return Msg{}, Errorf("%d unexpected fds on %s", len(m.Fds), m.Type)
	}
	if err := m.Refusal(); err != nil {
		return Msg{}, err
	}
	return m, nil
}

// Recv reads one whole frame. On error every fd received is closed.
func (ch *Channel) Recv() (m Msg, err error) {
	defer func() {
		if err != nil {
			CloseFds(m.Fds)
			m = Msg{}
		}
	}()
	for first := true; ; first = false {
		h, pfds, err := ch.recvPacket()
		m.Fds = append(m.Fds, pfds...)
		if err != nil {
			return m, err
		}
		switch {
		case first:
			m.Type = h.typ
		case h.typ != m.Type:
			return m, Errorf("%s packet inside a %s frame", h.typ, m.Type)
		case len(pfds) > 0:
			return m, Errorf("fds on a continuation packet of %s", m.Type)
		}
		if len(m.Payload)+int(h.size) > maxFrame {
			return m, Errorf("%s frame longer than %d bytes", m.Type, maxFrame)
		}
		m.Payload = append(m.Payload, ch.pkt[headerLen:headerLen+int(h.size)]...)
		if h.flags&flagMore == 0 {
			return m, nil
		}
	}
}

// recvPacket reads one packet into ch.pkt and the fds that came with it.
func (ch *Channel) recvPacket() (header, []int, error) {
	n, oobn, flags, _, err := ch.c.ReadMsgUnix(ch.pkt, ch.oob)
	fds, ferr := parseRights(ch.oob[:oobn])
	if err != nil {
		return header{}, fds, fmt.Errorf("handoff: receive: %w", err)
	}
	if ferr != nil {
		return header{}, fds, ferr
	}
	if err := checkRecvFlags(flags); err != nil {
		return header{}, fds, err
	}
	if n == 0 {
		return header{}, fds, fmt.Errorf("handoff: receive: peer closed the channel: %w", io.EOF)
	}
	h, err := parseHeader(ch.pkt[:n])
	return h, fds, err
}

// Drain reads and drops frames until the peer closes its end or the
// deadline passes; a malformed one is dropped too. Closing a socket with
// unread data resets it, and the peer then gets ECONNRESET before the
// frames still queued for it: a side that says a last word (ABORT, BUSY)
// drains before it closes.
func (ch *Channel) Drain() {
	for {
		m, err := ch.Recv()
		CloseFds(m.Fds)
		if err != nil && !errors.Is(err, ErrProtocol) {
			return
		}
	}
}
