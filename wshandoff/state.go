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

// flags of the encoded state.
const flagCloseSent = 1 << 0

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
}

func (p parked) encode() []byte {
	b := make([]byte, 0, len(stateMagic)+1+3*binary.MaxVarintLen64+1+len(p.hs.Subprotocol)+len(p.hs.Extensions)+len(p.app))
	b = append(b, stateMagic...)
	b = append(b, stateVersion)
	var flags byte
	if p.closeSent {
		flags |= flagCloseSent
	}
	b = append(b, flags)
	for _, s := range [][]byte{[]byte(p.hs.Subprotocol), []byte(p.hs.Extensions), p.app} {
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
