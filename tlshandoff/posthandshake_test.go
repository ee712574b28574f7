package tlshandoff

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestKeyUpdateFromServer: the server updates its keys and asks Go's
// client to update its own; Go's client answers with a KeyUpdate, which
// the record layer takes, and the data flows both ways under the new keys.
func TestKeyUpdateFromServer(t *testing.T) {
	type secrets struct{ in, out []byte }
	ch := make(chan [2]secrets, 1)
	addr := listen(t, newServer(t, serverConfig(t)), func(c *Conn) {
		if err := c.Handshake(); err != nil {
			return
		}
		before := secrets{bytes.Clone(c.r.in.secret), bytes.Clone(c.w.out.secret)}
		if err := c.KeyUpdate(true); err != nil {
			t.Errorf("KeyUpdate: %v", err)
		}
		echo(c)
		ch <- [2]secrets{before, {c.r.in.secret, c.w.out.secret}}
	})
	c, err := tls.Dial("tcp", addr.String(), goClient(t, tls.VersionTLS13, 0))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		roundTrip(t, c, randomBytes(t, 40<<10))
	}
	c.Close()
	s := <-ch
	if bytes.Equal(s[0].in, s[1].in) || bytes.Equal(s[0].out, s[1].out) {
		t.Fatal("a direction kept its traffic secret across the KeyUpdates")
	}
}

// TestKeyUpdateFromClient: a client's KeyUpdate with update_requested,
// even split over two records, is taken and answered: the server's next
// record is its KeyUpdate (not requesting), then data under its next keys.
func TestKeyUpdateFromClient(t *testing.T) {
	ch := make(chan error, 1)
	addr := listen(t, newServer(t, serverConfig(t)), echoErr(ch))
	p := dialPeer(t, addr)
	p.send(typeApplicationData, []byte("before"), nil)
	p.expectEcho([]byte("before"))
	p.send(typeHandshake, []byte{msgKeyUpdate, 0}, nil)
	p.send(typeHandshake, []byte{0, 1, 1}, nil)
	if err := p.out.update(); err != nil {
		t.Fatal(err)
	}
	typ, msg := p.recv()
	if typ != typeHandshake || !bytes.Equal(msg, []byte{msgKeyUpdate, 0, 0, 1, 0}) {
		t.Fatalf("server answered type %d % x, want KeyUpdate(update_not_requested)", typ, msg)
	}
	if err := p.in.update(); err != nil {
		t.Fatal(err)
	}
	p.send(typeApplicationData, []byte("after"), nil)
	p.expectEcho([]byte("after"))
}

// TestRecordsAccepted: records at the maximum size, empty ones and
// padded ones (TLS 1.3 allows both) are data as usual.
func TestRecordsAccepted(t *testing.T) {
	ch := make(chan error, 1)
	addr := listen(t, newServer(t, serverConfig(t)), echoErr(ch))
	p := dialPeer(t, addr)
	big := randomBytes(t, maxPlaintext)
	p.send(typeApplicationData, big, nil)
	p.expectEcho(big)
	p.send(typeApplicationData, nil, nil)
	padded := append([]byte("padded"), typeApplicationData) // content, type, then zeros
	padded = append(padded, make([]byte, 100)...)
	p.sendInner(padded)
	p.expectEcho([]byte("padded"))
}

// sendInner seals a TLS 1.3 inner plaintext as given (content, type,
// padding): seal adds the type itself, so the last byte is cut and
// passed as the type.
func (p *peer) sendInner(inner []byte) {
	p.t.Helper()
	p.send(inner[len(inner)-1], inner[:len(inner)-1], nil)
}

// TestRecordsRefused: what the record layer must not accept ends the
// connection with the right alert and a clear error, never a hang.
func TestRecordsRefused(t *testing.T) {
	cases := []struct {
		name  string
		send  func(p *peer)
		alert byte
		err   func(error) bool
	}{
		{"tampered", func(p *peer) {
			p.send(typeApplicationData, []byte("tampered"), func(rec []byte) { rec[headerLen+2] ^= 1 })
		}, alertBadRecordMAC, func(err error) bool { return errors.Is(err, errBadRecordMAC) }},
		{"wrong sequence number", func(p *peer) {
			p.out.seq++
			p.send(typeApplicationData, []byte("replayed"), nil)
		}, alertBadRecordMAC, func(err error) bool { return errors.Is(err, errBadRecordMAC) }},
		{"too large", func(p *peer) {
			p.send(typeApplicationData, make([]byte, maxPlaintext+1), nil)
		}, alertRecordOverflow, func(err error) bool { return err != nil && strings.Contains(err.Error(), "plaintext") }},
		{"unsupported message", func(p *peer) {
			p.send(typeHandshake, []byte{11, 0, 0, 0}, nil) // a Certificate nobody asked for
		}, alertUnexpectedMessage, func(err error) bool { return errors.Is(err, ErrUnsupportedMessage) }},
		{"KeyUpdate not ending its record", func(p *peer) {
			p.send(typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 0, msgKeyUpdate}, nil)
		}, alertUnexpectedMessage, func(err error) bool { return err != nil && strings.Contains(err.Error(), "KeyUpdate") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan error, 1)
			addr := listen(t, newServer(t, serverConfig(t)), echoErr(ch))
			p := dialPeer(t, addr)
			p.send(typeApplicationData, []byte("ok"), nil)
			p.expectEcho([]byte("ok"))
			tc.send(p)
			p.expectAlert(tc.alert)
			if err := <-ch; !tc.err(err) {
				t.Fatalf("server's Read: %v", err)
			}
		})
	}
}

// TestAlertsFromClient: close_notify is the end of the stream, a fatal
// alert an error that names it.
func TestAlertsFromClient(t *testing.T) {
	for _, tc := range []struct {
		alert []byte
		want  func(error) bool
	}{
		{[]byte{alertLevelWarning, alertCloseNotify}, func(err error) bool { return err == io.EOF }},
		{[]byte{alertLevelFatal, 40}, func(err error) bool {
			var ae tls.AlertError
			return errors.As(err, &ae) && ae == 40 // handshake_failure
		}},
	} {
		ch := make(chan error, 1)
		addr := listen(t, newServer(t, serverConfig(t)), echoErr(ch))
		p := dialPeer(t, addr)
		p.send(typeAlert, tc.alert, nil)
		if err := <-ch; !tc.want(err) {
			t.Fatalf("alert % x: server's Read: %v", tc.alert, err)
		}
	}
}
