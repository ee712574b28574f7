package tlshandoff

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/handoff-dev/handoff/internal/fields"
)

// The state of a connection at a record boundary, as MarshalState writes
// it (big-endian):
//
//	"TLHO" format(1)
//	version(2) suite(2) alpn(str8) servername(str8) flags(1)
//	peer certificates: count(1), each DER(b32)
//	read:  seq(8) secret(str8) key(str8) iv(str8)
//	write: seq(8) secret(str8) key(str8) iv(str8)
//	plaintext(b32) pending(b32) handshake(b32) app(b32)
//
// TLS 1.3 directions carry their traffic secret (keys derive from it, and
// KeyUpdate needs it), TLS 1.2 ones their key and IV. plaintext is
// decrypted application data not yet read, pending the bytes of records
// not yet decrypted, handshake a post-handshake message begun, app the
// application's own state (Park's). The client's certificates move so
// that an application that authenticates clients still sees them.
const (
	stateMagic   = "TLHO"
	stateFormat  = 1
	flagResumed  = 1
	maxPending   = 64 << 10
	maxStateText = 255
	maxPeerCerts = 8
	maxCertLen   = 64 << 10
)

// ErrState is wrapped by every error about a malformed connection state.
var ErrState = errors.New("tlshandoff: malformed connection state")

// IsState reports whether b begins like a state MarshalState or Park
// wrote: a handoff.Options.Resume that serves several protocols sends
// those to Server.Resume.
func IsState(b []byte) bool { return bytes.HasPrefix(b, []byte(stateMagic)) }

// MarshalState returns the connection's TLS state, with app (the
// application's own state for it) appended, at a record boundary. Call it
// when no Read or Write is running; the connection must not be used
// afterwards but to be closed without a close_notify (close its
// transport), or carried on if the move fails. The bytes are secret:
// they hold the connection's keys. They travel only on the handoff
// channel; never write them to a file or a log.
func (c *Conn) MarshalState(app []byte) ([]byte, error) {
	if ok, why := c.Movable(); !ok {
		return nil, fmt.Errorf("tlshandoff: connection cannot move: %s", why)
	}
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.marshalLocked(app)
}

func (c *Conn) marshalLocked(app []byte) ([]byte, error) {
	if c.r.err != nil || c.w.err != nil {
		return nil, fmt.Errorf("tlshandoff: connection failed: %w", errors.Join(c.r.err, c.w.err))
	}
	st := c.state
	if len(st.NegotiatedProtocol) > maxStateText || len(st.ServerName) > maxStateText || len(c.r.rbuf) > maxPending ||
		len(st.PeerCertificates) > maxPeerCerts || slices.ContainsFunc(st.PeerCertificates, func(c *x509.Certificate) bool { return len(c.Raw) > maxCertLen }) {
		return nil, errors.New("tlshandoff: connection state too large to move")
	}
	b := append([]byte(stateMagic), stateFormat)
	b = binary.BigEndian.AppendUint16(b, st.Version)
	b = binary.BigEndian.AppendUint16(b, st.CipherSuite)
	b = appendStr8(b, []byte(st.NegotiatedProtocol))
	b = appendStr8(b, []byte(st.ServerName))
	flags := byte(0)
	if st.DidResume {
		flags |= flagResumed
	}
	b = append(b, flags, byte(len(st.PeerCertificates)))
	for _, cert := range st.PeerCertificates {
		b = binary.BigEndian.AppendUint32(b, uint32(len(cert.Raw)))
		b = append(b, cert.Raw...)
	}
	b = appendHalf(b, c.r.in)
	b = appendHalf(b, c.w.out)
	for _, p := range [][]byte{c.r.plain, c.r.rbuf, c.r.hsMsg, app} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b, nil
}

func appendStr8(b, s []byte) []byte { return append(append(b, byte(len(s))), s...) }

func appendHalf(b []byte, h *half) []byte {
	b = binary.BigEndian.AppendUint64(b, h.seq)
	if h.secret != nil {
		return appendStr8(appendStr8(appendStr8(b, h.secret), nil), nil)
	}
	return appendStr8(appendStr8(appendStr8(b, nil), h.key), h.iv)
}

// decoder reads a state's fields (package fields, as handoff's frames
// are read); its errors wrap ErrState.
type decoder struct{ fields.Reader }

func (d *decoder) str8() []byte { return d.Take(int(d.U8())) }

// b32 reads a length-prefixed field of at most limit bytes.
func (d *decoder) b32(limit int) []byte {
	p := d.Take(4)
	if p == nil {
		return nil
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(limit) {
		d.Fail("field of %d bytes, at most %d allowed", n, limit)
		return nil
	}
	return d.Take(int(n))
}

// Resume rebuilds a connection from a state MarshalState or Park wrote,
// over raw, a transport at the same point of the same TCP connection (in
// the next process: the handoff.Conn handed to Options.Resume, or the
// connection of a dup of the fd). It returns the Conn, which owns raw,
// and the application's state. On error nothing is kept of state and
// raw is left alone.
func (s *Server) Resume(raw net.Conn, state []byte) (*Conn, []byte, error) {
	c, app, err := parseState(state)
	if err != nil {
		return nil, nil, err
	}
	c.srv, c.raw, c.movable = s, raw, true
	c.hsDone.Store(true)
	return c, app, nil
}

// parseState decodes a state whole before it builds anything.
func parseState(state []byte) (*Conn, []byte, error) {
	d := &decoder{fields.NewReader(state, ErrState)}
	if string(d.Take(len(stateMagic))) != stateMagic || d.U8() != stateFormat {
		return nil, nil, fmt.Errorf("%w: unknown format", ErrState)
	}
	c := &Conn{}
	st := &c.state
	st.Version, st.CipherSuite = d.U16(), d.U16()
	st.NegotiatedProtocol, st.ServerName = string(d.str8()), string(d.str8())
	flags := d.U8()
	st.DidResume, st.HandshakeComplete = flags&flagResumed != 0, true
	certs := d.certs()
	in, out := d.half(), d.half()
	plain, pending := d.b32(maxPlaintext), d.b32(maxPending)
	hsMsg, app := d.b32(maxHandshakeMsg), d.b32(len(state))
	if d.Len() != 0 {
		d.Fail("%d bytes after the last field", d.Len())
	}
	if flags&^flagResumed != 0 {
		d.Fail("unknown flags %#x", flags)
	}
	if err := d.Err(); err != nil {
		return nil, nil, err
	}
	var err error
	if st.PeerCertificates, err = parseCerts(certs); err != nil {
		return nil, nil, err
	}
	s := lookupSuite(st.Version, st.CipherSuite)
	if s == nil {
		return nil, nil, fmt.Errorf("%w: %s with suite %#04x", ErrState, tls.VersionName(st.Version), st.CipherSuite)
	}
	if c.r.in, err = in.build(s); err == nil {
		c.w.out, err = out.build(s)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrState, err)
	}
	c.r.plain = bytes.Clone(plain)
	c.r.rbuf = append(make([]byte, 0, max(len(pending), readChunk)), pending...)
	c.r.hsMsg = bytes.Clone(hsMsg)
	return c, bytes.Clone(app), nil
}

// certs reads the peer certificates' DER.
func (d *decoder) certs() [][]byte {
	n := int(d.U8())
	if n > maxPeerCerts {
		d.Fail("%d peer certificates, at most %d allowed", n, maxPeerCerts)
	}
	var ders [][]byte
	for i := 0; i < n && d.Err() == nil; i++ {
		ders = append(ders, d.b32(maxCertLen))
	}
	return ders
}

func parseCerts(ders [][]byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: peer certificate: %w", ErrState, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// halfState is a direction as the state holds it.
type halfState struct {
	seq             uint64
	secret, key, iv []byte
}

func (d *decoder) half() halfState {
	return halfState{seq: d.U64(), secret: d.str8(), key: d.str8(), iv: d.str8()}
}

func (hs halfState) build(s *suite) (*half, error) {
	if s.version == tls.VersionTLS13 {
		if len(hs.secret) != s.hash().Size() || len(hs.key)+len(hs.iv) != 0 {
			return nil, errors.New("TLS 1.3 direction without its traffic secret")
		}
		return newHalf13(s, hs.secret, hs.seq)
	}
	if len(hs.secret) != 0 {
		return nil, errors.New("TLS 1.2 direction with a traffic secret")
	}
	return newHalf(s, hs.key, hs.iv, hs.seq)
}
