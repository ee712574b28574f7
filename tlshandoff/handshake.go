package tlshandoff

import (
	"bytes"
	"encoding/hex"
	"net"
	"sync"
	"sync/atomic"
)

// hsConn is the transport crypto/tls does its handshake over. It hands
// crypto/tls at most one TLS record per Read, so that once the handshake
// is over crypto/tls holds nothing of what follows: the client's first
// application records are still here, undecrypted, for the record layer.
// It also keeps what the switch to the record layer needs and crypto/tls
// does not say: the traffic secrets (through a KeyLogWriter of this
// connection alone), the server random, and the records written and read
// once encryption began, to count those under the final keys.
//
// After the handshake it is crypto/tls's plain transport again, for a
// connection that cannot move (passthrough).
type hsConn struct {
	net.Conn
	passthrough atomic.Bool

	// Read side, used by crypto/tls's reading goroutine only.
	rbuf  []byte // read from the network, not yet given to crypto/tls
	left  int    // bytes of the current record still to give; 0 at a boundary
	cur   []byte // the current record, once whole, kept when encrypted
	inEnc bool   // a ChangeCipherSpec or an encrypted record went by
	in    [][]byte

	// Write side, used under crypto/tls's write lock.
	wpart        []byte // a record written in part
	outEnc       bool
	out          [][]byte
	serverRandom []byte

	mu       sync.Mutex // guards what follows: written from the handshake's callbacks
	secrets  map[string][]byte
	resumed  []byte // the master secret of the TLS 1.2 session a ticket resumes
	clientHi []byte // the client random, from the ClientHello
}

func newHSConn(raw net.Conn) *hsConn {
	return &hsConn{Conn: raw, secrets: make(map[string][]byte)}
}

// Read gives crypto/tls the bytes of one record at most.
func (h *hsConn) Read(p []byte) (int, error) {
	if h.passthrough.Load() {
		if len(h.rbuf) > 0 {
			n := copy(p, h.rbuf)
			h.rbuf = h.rbuf[n:]
			return n, nil
		}
		return h.Conn.Read(p)
	}
	if err := h.fill(); err != nil {
		return 0, err
	}
	if h.left == 0 {
		n, err := recordLen(h.rbuf[:headerLen])
		if err != nil {
			// Not TLS, or not a record we can follow: crypto/tls says why.
			h.passthrough.Store(true)
			return h.Read(p)
		}
		h.left, h.cur = n, h.cur[:0]
	}
	n := min(len(p), h.left, len(h.rbuf))
	copy(p, h.rbuf[:n])
	h.cur = append(h.cur, h.rbuf[:n]...)
	h.rbuf, h.left = h.rbuf[n:], h.left-n
	if h.left == 0 {
		h.sawIn(h.cur)
	}
	return n, nil
}

// fill reads from the network until a record's header is buffered, or
// for a record begun, at least one of its bytes.
func (h *hsConn) fill() error {
	need := 1
	if h.left == 0 {
		need = headerLen
	}
	for len(h.rbuf) < need {
		var buf [4096]byte
		n, err := h.Conn.Read(buf[:])
		h.rbuf = append(h.rbuf, buf[:n]...)
		if n == 0 && err != nil {
			return err
		}
	}
	return nil
}

// sawIn keeps a record read once encryption began in that direction,
// and the client random of the first ClientHello (a resumed TLS 1.2
// session logs none).
func (h *hsConn) sawIn(rec []byte) {
	if h.clientHi == nil && rec[0] == typeHandshake && len(rec) >= headerLen+38 && rec[headerLen] == 1 {
		h.clientHi = bytes.Clone(rec[headerLen+6 : headerLen+38])
	}
	h.inEnc = h.inEnc || rec[0] == typeChangeCipherSpec || rec[0] == typeApplicationData
	if h.inEnc && rec[0] != typeChangeCipherSpec {
		h.in = append(h.in, bytes.Clone(rec))
	}
}

// Write passes crypto/tls's records on and keeps a copy of those the
// switch will count, whole records only.
func (h *hsConn) Write(p []byte) (int, error) {
	if !h.passthrough.Load() {
		h.sawOut(p)
	}
	return h.Conn.Write(p)
}

func (h *hsConn) sawOut(p []byte) {
	h.wpart = append(h.wpart, p...)
	for len(h.wpart) >= headerLen {
		n, err := recordLen(h.wpart[:headerLen])
		if err != nil || len(h.wpart) < n {
			return
		}
		rec := h.wpart[:n]
		if h.serverRandom == nil && rec[0] == typeHandshake && n >= headerLen+38 && rec[headerLen] == 2 {
			h.serverRandom = bytes.Clone(rec[headerLen+6 : headerLen+38]) // ServerHello.random
		}
		h.outEnc = h.outEnc || rec[0] == typeChangeCipherSpec || rec[0] == typeApplicationData
		if h.outEnc && rec[0] != typeChangeCipherSpec {
			h.out = append(h.out, bytes.Clone(rec))
		}
		h.wpart = h.wpart[n:]
	}
}

// keyLog is this connection's KeyLogWriter: it keeps the secrets in
// memory (and passes the lines on to the application's own KeyLogWriter,
// if its tls.Config has one, as crypto/tls would have).
type keyLog struct {
	h    *hsConn
	user interface{ Write([]byte) (int, error) }
}

// Write takes one NSS key log line: LABEL <client random> <secret>.
func (k keyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) == 3 {
		if secret, err := hex.DecodeString(string(f[2])); err == nil {
			k.h.mu.Lock()
			k.h.secrets[string(f[0])] = secret
			k.h.mu.Unlock()
		}
	}
	if k.user != nil {
		return k.user.Write(line)
	}
	return len(line), nil
}

// secret returns the secret logged under label.
func (h *hsConn) secret(label string) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.secrets[label]
}

func (h *hsConn) setResumedMaster(m []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resumed = bytes.Clone(m)
}

// master returns the TLS 1.2 master secret: the one logged by a full
// handshake, or the resumed session's.
func (h *hsConn) master() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.secrets[labelTLS12]; m != nil {
		return m
	}
	return h.resumed
}

// forget drops every copy the handshake kept.
func (h *hsConn) forget() {
	h.mu.Lock()
	for k, s := range h.secrets {
		clear(s)
		delete(h.secrets, k)
	}
	clear(h.resumed)
	h.resumed = nil
	h.mu.Unlock()
	h.in, h.out, h.cur, h.wpart = nil, nil, nil, nil
}

// countOpen counts the records of recs, in order, that authenticate under
// h at consecutive sequence numbers from h.seq, and leaves h past them.
// Records under the handshake keys fail and are skipped; decryption works
// on copies.
func countOpen(h *half, recs [][]byte) (n int, types []byte) {
	for _, rec := range recs {
		typ, plain, err := h.open(bytes.Clone(rec))
		if err != nil {
			continue
		}
		n++
		if typ == typeHandshake && len(plain) > 0 {
			typ = 0x80 | plain[0] // a handshake message: say which
		}
		types = append(types, typ)
	}
	return n, types
}
