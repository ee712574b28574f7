//go:build linux

package wshandoff

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	cws "github.com/coder/websocket"
)

// TestCompression: a client that offers permessage-deflate with context
// takeover (coder/websocket's CompressionContextTakeover offers plain
// "permessage-deflate") is answered, by a server of either library that
// enables compression with context takeover, with permessage-deflate
// without context takeover in both directions; its messages and the
// replies travel compressed (far fewer bytes on the wire than in the
// messages), before and after each upgrade, on the one connection. A
// server that kept a compression window would fail here: the client
// compresses each message against the ones before it when allowed to,
// and a new process has no window to decompress that against.
func TestCompression(t *testing.T) {
	for _, lib := range []string{"gorilla", "coder"} {
		t.Run(lib, func(t *testing.T) { compression(t, lib) })
	}
}

// countingConn counts the bytes that pass on a client's connection.
type countingConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

func compression(t *testing.T, lib string) {
	h := startChain(t, lib)
	var cc *countingConn
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, a)
		if err != nil {
			return nil, err
		}
		cc = &countingConn{Conn: nc}
		return cc, nil
	}}
	ctx := context.Background()
	ws, resp, err := cws.Dial(ctx, "ws://"+h.addr+"/ws", &cws.DialOptions{
		HTTPClient:           &http.Client{Transport: tr},
		CompressionMode:      cws.CompressionContextTakeover,
		CompressionThreshold: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if got := resp.Request.Header.Get("Sec-WebSocket-Extensions"); got != "permessage-deflate" {
		t.Fatalf("the client offered %q, want context takeover (plain permessage-deflate)", got)
	}
	ext := resp.Header.Get("Sec-WebSocket-Extensions")
	params := map[string]bool{}
	for _, p := range strings.Split(ext, ";") {
		params[strings.TrimSpace(p)] = true
	}
	if !params["permessage-deflate"] || !params["server_no_context_takeover"] || !params["client_no_context_takeover"] {
		t.Fatalf("Sec-WebSocket-Extensions %q, want permessage-deflate without context takeover both ways", ext)
	}
	n := 0
	roundtrip := func(tag string) {
		t.Helper()
		for k := 0; k < 5; k++ {
			n++
			msg := []byte(fmt.Sprintf("%s-%d %s", tag, k, strings.Repeat("the same words again and again ", 500)))
			r0, w0 := cc.read.Load(), cc.written.Load()
			if err := ws.Write(ctx, cws.MessageText, msg); err != nil {
				t.Fatal(err)
			}
			_, got, err := ws.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Appendf(nil, "%d %d %s", h.pid, n, msg); !bytes.Equal(got, want) {
				t.Fatalf("got %.60q, want %.60q", got, want)
			}
			r, w := cc.read.Load()-r0, cc.written.Load()-w0
			if w*4 > int64(len(msg)) || r*4 > int64(len(got)) {
				t.Fatalf("%s: a message of %d bytes took %d on the wire, its reply of %d took %d: not compressed", tag, len(msg), w, len(got), r)
			}
		}
	}
	roundtrip("first")
	for u := 1; u <= 3; u++ {
		old := h.pid
		h.hup()
		if p := h.upgraded(); p == old {
			t.Fatalf("upgrade %d: still served by %d", u, old)
		}
		roundtrip(fmt.Sprintf("after%d", u))
	}
	h.checkHandshakes(1)
}
