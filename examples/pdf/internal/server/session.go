package server

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// session is what a connection remembers between requests.
type session struct {
	gw string // from the last HELLO; empty before one
	n  uint64 // requests received so far, malformed ones included
}

// sessionFormat leads an encoded session so that a later version can change
// the layout and still read this one. v1 and v2 share format 1.
const sessionFormat = 1

var errSession = errors.New("server: bad session state")

// encode returns format byte, uvarint n, then the gateway name to the end.
func (s *session) encode() []byte {
	b := []byte{sessionFormat}
	b = binary.AppendUvarint(b, s.n)
	return append(b, s.gw...)
}

// decodeSession reads what encode wrote. No state means a fresh connection.
func decodeSession(b []byte) (*session, error) {
	if len(b) == 0 {
		return &session{}, nil
	}
	if b[0] != sessionFormat {
		return nil, fmt.Errorf("%w: format %d", errSession, b[0])
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 {
		return nil, fmt.Errorf("%w: bad request count", errSession)
	}
	return &session{n: n, gw: string(b[1+k:])}, nil
}
