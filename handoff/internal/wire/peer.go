package wire

import (
	"crypto/subtle"
	"encoding/binary"
)

// The frames of the peer transport (PROTOCOL.md, "Peer transport"): a new
// process the old one did not start (another container of a pod) connects
// to the old one's takeover socket. They pass only on such a connection;
// an exec'd child never sees them, so they leave Version as it is.

const (
	// MaxToken is the longest token a TAKEOVER carries.
	MaxToken = 4096
	// MaxListeners is how many listeners LISTENERS frames carry in all.
	MaxListeners = 1 << 12
)

// Takeover is the first frame of a peer: it asks to be let in, with the
// token both sides read from the same secret (empty if none). It decides
// admission only; the HELLO that follows is as an exec'd child's.
type Takeover struct {
	Version uint16
	Token   []byte
}

func (Takeover) Type() Type { return TypeTakeover }

func (t Takeover) Append(b []byte) []byte {
	b = append(b, helloMagic...)
	b = binary.BigEndian.AppendUint16(b, t.Version)
	return appendBytes(b, t.Token)
}

// Decode reads a TAKEOVER; a token longer than MaxToken is refused before
// anything is allocated for it.
func (t *Takeover) Decode(p []byte) error {
	*t = Takeover{}
	d, err := afterMagic(TypeTakeover, p)
	if err != nil {
		return err
	}
	t.Version = d.U16()
	if n := d.peekU32(); n > MaxToken && d.Err() == nil {
		return Errorf("TAKEOVER token of %d bytes, at most %d allowed", n, MaxToken)
	}
	t.Token = d.bytes()
	return d.finish(TypeTakeover)
}

// TokenMatches compares a peer's token with this process's in constant
// time, so that its timing tells a guesser nothing.
func TokenMatches(got, want []byte) bool {
	return subtle.ConstantTimeCompare(got, want) == 1
}

// Busy answers a TAKEOVER instead of HELLO when the old process cannot be
// taken over now (not ready, an upgrade in progress, handed over,
// stopping): the peer retries later. A refusal for good is an ABORT.
type Busy struct{ Reason string }

func (Busy) Type() Type { return TypeBusy }

func (b Busy) Append(p []byte) []byte { return appendString(p, b.Reason) }

func (b *Busy) Decode(p []byte) error {
	d := newDecoder(p)
	b.Reason = d.str()
	return d.finish(TypeBusy)
}

// Listeners carries listening sockets to a peer, key i with fd i: the
// keys and fds an exec'd child gets in HANDOFF_FDS and at fd 4 on. A set
// larger than MaxFdsPerMsg takes several frames; First and Total say
// where each stands.
type Listeners struct {
	First, Total uint16
	Keys         []string
}

func (Listeners) Type() Type { return TypeListeners }

func (l Listeners) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, l.First)
	b = binary.BigEndian.AppendUint16(b, l.Total)
	b = binary.BigEndian.AppendUint16(b, uint16(len(l.Keys)))
	for _, k := range l.Keys {
		b = appendString(b, k)
	}
	return b
}

// Decode reads a LISTENERS frame and checks that it fits its set: between
// 1 and MaxFdsPerMsg keys, ending within Total, Total at most
// MaxListeners. That its fds match its keys is the receiver's check.
func (l *Listeners) Decode(p []byte) error {
	*l = Listeners{}
	d := newDecoder(p)
	l.First, l.Total = d.U16(), d.U16()
	n := int(d.U16())
	switch {
	case d.Err() != nil:
	case n == 0 || n > MaxFdsPerMsg:
		return Errorf("LISTENERS with %d keys, 1 to %d allowed", n, MaxFdsPerMsg)
	case l.Total > MaxListeners || int(l.First)+n > int(l.Total):
		return Errorf("LISTENERS %d+%d beyond its total of %d (at most %d)", l.First, n, l.Total, MaxListeners)
	}
	for i := 0; i < n && d.Err() == nil; i++ {
		l.Keys = append(l.Keys, d.str())
	}
	return d.finish(TypeListeners)
}
