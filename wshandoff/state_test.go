package wshandoff

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// TestStateRoundTrip: every field comes back, a ws state carries no TLS
// fields (it reads as before wss existed), and every truncation or
// unknown flag is an ErrState, never a panic.
func TestStateRoundTrip(t *testing.T) {
	for _, p := range []parked{
		{},
		{hs: Handshake{Subprotocol: "chat", Extensions: "permessage-deflate; server_no_context_takeover"}, closeSent: true, app: []byte("42")},
		{app: []byte("7"), tls: []byte("TLHO-state"), pre: []byte{0x81, 0x02, 'h'}},
		{tls: []byte("TLHO-state")},
	} {
		b := p.encode()
		got, err := decodeState(b)
		if err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		if len(got.app) == 0 {
			got.app = p.app
		}
		if len(got.pre) == 0 {
			got.pre = p.pre
		}
		if !reflect.DeepEqual(got, p) {
			t.Fatalf("decoded %+v, want %+v", got, p)
		}
		if p.tls == nil && b[len(stateMagic)+1]&(flagTLS|flagPre) != 0 {
			t.Fatalf("a ws state has TLS flags: %q", b)
		}
		for i := range b {
			if _, err := decodeState(b[:i]); !errors.Is(err, ErrState) {
				t.Fatalf("%q truncated to %d bytes: %v, want ErrState", b, i, err)
			}
		}
	}
	b := parked{}.encode()
	for _, flags := range []byte{1 << 7, flagPre} {
		bad := bytes.Clone(b)
		bad[len(stateMagic)+1] = flags
		if _, err := decodeState(bad); !errors.Is(err, ErrState) {
			t.Fatalf("flags %#x: %v, want ErrState", flags, err)
		}
	}
}
