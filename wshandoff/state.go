package wshandoff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// stateMagic begins every state this package parks a connection with, so
// that Options.Resume can tell a WebSocket from the other connections of
// the process (IsWebSocket). The byte after it is the encoding's version.
const stateMagic = "wshandoff"

const stateVersion = 1

// flags of the encoded state. A connection over TLS carries two more
// fields after the application's state: the TLS state (tlshandoff's)
// and the plaintext read ahead of it, each only if its flag is set, so
// that the state of a connection without TLS reads as it always has.
const (
	flagCloseSent = 1 << 0
	flagTLS       = 1 << 1
	flagPre       = 1 << 2
	knownFlags    = flagCloseSent | flagTLS | flagPre
)

// ErrState is wrapped by Resume's error for a state this package did not
// write, or wrote in a version it does not read.
var ErrState = errors.New("wshandoff: not a WebSocket connection's state")

// IsWebSocket reports whether a connection's state, as handoff.Options.Resume
// gets it, is one this package parked: then pass the connection to Resume
// (or Upgrader.Resume, ResumeCoder).
func IsWebSocket(state []byte) bool {
	return bytes.HasPrefix(state, []byte(stateMagic))
}

// parked is what moves with a connection besides its bytes.
type parked struct {
	hs        Handshake
	closeSent bool
	app       []byte
	tls       []byte // the TLS state, over TLS; nil otherwise
	pre       []byte // plaintext read ahead of the TLS state's, over TLS
}

func (p parked) encode() []byte {
	b := make([]byte, 0, len(stateMagic)+2+5*binary.MaxVarintLen64+len(p.hs.Subprotocol)+len(p.hs.Extensions)+len(p.app)+len(p.tls)+len(p.pre))
	b = append(b, stateMagic...)
	b = append(b, stateVersion)
	var flags byte
	fields := [][]byte{[]byte(p.hs.Subprotocol), []byte(p.hs.Extensions), p.app}
	if p.closeSent {
		flags |= flagCloseSent
	}
	if p.tls != nil {
		flags |= flagTLS
		fields = append(fields, p.tls)
		if len(p.pre) > 0 {
			flags |= flagPre
			fields = append(fields, p.pre)
		}
	}
	b = append(b, flags)
	for _, s := range fields {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// decodeState reads what encode wrote. Like handoff's wire decoder it
// records the first shortfall, never panics and allocates nothing beyond
// the bytes it was given.
func decodeState(b []byte) (parked, error) {
	if !IsWebSocket(b) {
		return parked{}, ErrState
	}
	d := decoder{b: b[len(stateMagic):]}
	if v := d.byte(); d.err == nil && v != stateVersion {
		return parked{}, fmt.Errorf("%w: version %d", ErrState, v)
	}
	flags := d.byte()
	sub, ext, app := d.field(), d.field(), d.field()
	var tls, pre []byte
	if flags&flagTLS != 0 {
		tls = d.field()
	}
	if flags&flagPre != 0 {
		pre = d.field()
	}
	if d.err == nil && (flags&^knownFlags != 0 || flags&flagPre != 0 && flags&flagTLS == 0) {
		d.err = fmt.Errorf("%w: flags %#x", ErrState, flags)
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d bytes after the state", ErrState, len(d.b))
	}
	if d.err != nil {
		return parked{}, d.err
	}
	return parked{
		hs:        Handshake{Subprotocol: string(sub), Extensions: string(ext)},
		closeSent: flags&flagCloseSent != 0,
		app:       app,
		tls:       tls,
		pre:       bytes.Clone(pre),
	}, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) short(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated at %s", ErrState, what)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.short("a flag byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) field() []byte {
	if d.err != nil {
		return nil
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(len(d.b)-k) {
		d.short("a field")
		return nil
	}
	v := d.b[k : k+int(n)]
	d.b = d.b[k+int(n):]
	return v
}
