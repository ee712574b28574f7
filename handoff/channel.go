//go:build linux

package handoff

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// channel carries frames over a SOCK_SEQPACKET Unix socket. A frame larger
// than one packet is split into packets flagged "more"; a frame's fds ride on
// its first packet.
//
// Ownership: the channel owns its socket. fds returned by recv belong to the
// caller, who must close every one it does not keep.
//
// One goroutine may send while another receives: each has its own buffer.
type channel struct {
	c    *net.UnixConn
	out  []byte // the packet being sent
	pkt  []byte // the packet last received
	oob  []byte
	sent uint64 // bytes sent, for progress logs
}

func newChannel(c *net.UnixConn) *channel {
	return &channel{c: c, out: make([]byte, headerLen+maxPacketData), pkt: make([]byte, headerLen+maxPacketData),
		oob: make([]byte, oobSpace(maxFdsPerMsg))}
}

func (ch *channel) close() error { return ch.c.Close() }

func (ch *channel) setDeadline(t time.Time) { _ = ch.c.SetDeadline(t) }

// bindDeadline makes ctx's deadline the channel's and wakes a blocked send
// or receive when ctx ends. The returned func unbinds the wake-up (the
// deadline stays).
func (ch *channel) bindDeadline(ctx context.Context) (unbind func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		ch.setDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { ch.setDeadline(aLongTimeAgo) })
}

// send writes one frame with fds attached to its first packet.
func (ch *channel) send(typ byte, payload []byte, fds []int) error {
	if len(fds) > maxFdsPerMsg {
		return fmt.Errorf("handoff: %d fds in one frame, at most %d", len(fds), maxFdsPerMsg)
	}
	oob := rightsOOB(fds)
	for first := true; first || len(payload) > 0; first = false {
		n := min(len(payload), maxPacketData)
		h := header{typ: typ, size: uint32(n)}
		if n < len(payload) {
			h.flags = flagMore
		}
		pkt := ch.out[:headerLen+n]
		putHeader(pkt, h)
		copy(pkt[headerLen:], payload[:n])
		if _, _, err := ch.c.WriteMsgUnix(pkt, oob, nil); err != nil {
			return fmt.Errorf("handoff: send %s: %w", frameName(typ), err)
		}
		ch.sent += uint64(len(pkt))
		payload, oob = payload[n:], nil
	}
	return nil
}

// recv reads one whole frame. On error every fd received is closed.
func (ch *channel) recv() (typ byte, payload []byte, fds []int, err error) {
	defer func() {
		if err != nil {
			closeFds(fds)
			fds = nil
		}
	}()
	for first := true; ; first = false {
		h, pfds, err := ch.recvPacket()
		fds = append(fds, pfds...)
		if err != nil {
			return 0, nil, fds, err
		}
		switch {
		case first:
			typ = h.typ
		case h.typ != typ:
			return 0, nil, fds, protoErr("%s packet inside a %s frame", frameName(h.typ), frameName(typ))
		case len(pfds) > 0:
			return 0, nil, fds, protoErr("fds on a continuation packet of %s", frameName(typ))
		}
		if len(payload)+int(h.size) > maxFrame {
			return 0, nil, fds, protoErr("%s frame longer than %d bytes", frameName(typ), maxFrame)
		}
		payload = append(payload, ch.pkt[headerLen:headerLen+int(h.size)]...)
		if h.flags&flagMore == 0 {
			return typ, payload, fds, nil
		}
	}
}

// recvPacket reads one packet into ch.pkt and the fds that came with it.
func (ch *channel) recvPacket() (header, []int, error) {
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
