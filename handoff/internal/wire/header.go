package wire

import "encoding/binary"

const (
	headerLen     = 8
	flagMore      = 1        // more packets of this frame follow
	maxPacketData = 60 << 10 // payload bytes per packet, under the default socket buffer
	maxFrame      = 64 << 20 // the largest frame a receiver accepts
)

// header is the fixed start of every packet.
type header struct {
	typ   Type
	flags byte
	size  uint32
}

func putHeader(b []byte, h header) {
	b[0], b[1], b[2], b[3] = byte(h.typ), h.flags, 0, 0
	binary.BigEndian.PutUint32(b[4:], h.size)
}

func parseHeader(pkt []byte) (header, error) {
	if len(pkt) < headerLen {
		return header{}, Errorf("packet of %d bytes is shorter than a header", len(pkt))
	}
	h := header{typ: Type(pkt[0]), flags: pkt[1], size: binary.BigEndian.Uint32(pkt[4:])}
	if pkt[2] != 0 || pkt[3] != 0 || h.flags&^flagMore != 0 {
		return h, Errorf("reserved header bits set in %s packet", h.typ)
	}
	if int(h.size) != len(pkt)-headerLen {
		return h, Errorf("%s packet says %d payload bytes, carries %d", h.typ, h.size, len(pkt)-headerLen)
	}
	return h, nil
}
