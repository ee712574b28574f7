package wire

import (
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestPeerFramesRoundTrip: the peer transport's frames come back whole,
// and every cut of them is a protocol error.
func TestPeerFramesRoundTrip(t *testing.T) {
	for _, c := range []struct {
		in, out interface {
			Encoder
			Decoder
		}
	}{
		{&Takeover{Version: Version, Token: []byte("s3cret\x00")}, &Takeover{}},
		{&Busy{Reason: "not ready"}, &Busy{}},
		{&Listeners{First: 253, Total: 255, Keys: []string{"tcp [::1]:80", "unixpacket /run/h/handoff.sock"}}, &Listeners{}},
	} {
		b := c.in.Append(nil)
		if err := c.out.Decode(b); err != nil || !reflect.DeepEqual(c.in, c.out) {
			t.Errorf("%s: %+v, %v; want %+v", c.in.Type(), c.out, err, c.in)
		}
		for i := range b {
			if err := c.out.Decode(b[:i]); !errors.Is(err, ErrProtocol) {
				t.Errorf("%s cut at %d of %d: %v", c.in.Type(), i, len(b), err)
			}
		}
	}
}

// TestPeerFramesRefused: what a peer frame may not say.
func TestPeerFramesRefused(t *testing.T) {
	long := binary.BigEndian.AppendUint32(append([]byte(helloMagic), 0, 5), MaxToken+1)
	keys := func(first, total, n uint16) []byte {
		l := Listeners{First: first, Total: total}
		for range n {
			l.Keys = append(l.Keys, "k")
		}
		return l.Append(nil)
	}
	for name, c := range map[string]struct {
		f    Decoder
		p    []byte
		want string
	}{
		"token too long":       {&Takeover{}, long, "at most 4096"},
		"no magic":             {&Takeover{}, []byte("HOFX\x00\x05\x00\x00\x00\x00"), "magic"},
		"extra byte":           {&Takeover{}, append(Takeover{Version: 5}.Append(nil), 0), "after its last field"},
		"no keys":              {&Listeners{}, keys(0, 0, 0), "0 keys"},
		"over SCM_MAX_FD":      {&Listeners{}, keys(0, 300, 254), "254 keys"},
		"beyond its total":     {&Listeners{}, keys(1, 2, 2), "beyond its total"},
		"total over the limit": {&Listeners{}, keys(0, MaxListeners+1, 1), "beyond its total"},
		"busy extra byte":      {&Busy{}, append(Busy{Reason: "x"}.Append(nil), 9), "after its last field"},
	} {
		err := c.f.Decode(c.p)
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a protocol error saying %q", name, err, c.want)
		}
	}
}

func TestTokenMatches(t *testing.T) {
	if !TokenMatches([]byte("abc"), []byte("abc")) || TokenMatches([]byte("abc"), []byte("abd")) ||
		TokenMatches([]byte("ab"), []byte("abc")) || TokenMatches(nil, []byte("x")) {
		t.Error("TokenMatches compares wrongly")
	}
}
