package tlshandoff

import (
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Record content types (RFC 8446, section 5.1).
const (
	typeChangeCipherSpec = 20
	typeAlert            = 21
	typeHandshake        = 22
	typeApplicationData  = 23
)

const (
	headerLen = 5
	// maxPlaintext is the largest fragment a record may carry.
	maxPlaintext = 1 << 14
	// maxCiphertext bounds a record's body as TLS 1.2 does (RFC 5246,
	// section 6.2.3); TLS 1.3's bound (2^14 + 256) is checked after
	// decryption, through the plaintext's length.
	maxCiphertext = maxPlaintext + 2048
	tagLen        = 16
)

// errBadRecordMAC is a record that does not authenticate.
var errBadRecordMAC = errors.New("tlshandoff: record does not authenticate (bad_record_mac)")

// recordLen returns the length of the record that starts hdr (header
// included), or an error if the header cannot start a record.
func recordLen(hdr []byte) (int, error) {
	typ, n := hdr[0], int(binary.BigEndian.Uint16(hdr[3:5]))
	if typ < typeChangeCipherSpec || typ > typeApplicationData || hdr[1] != 3 {
		return 0, fmt.Errorf("tlshandoff: not a TLS record: header % x", hdr[:headerLen])
	}
	if n > maxCiphertext {
		return 0, fmt.Errorf("tlshandoff: record of %d bytes, at most %d allowed (record_overflow)", n, maxCiphertext)
	}
	return headerLen + n, nil
}

// half is one direction of the record layer: its keys and the sequence
// number of the next record.
type half struct {
	suite  *suite
	aead   cipher.AEAD
	key    []byte
	iv     []byte // 12 bytes, or TLS 1.2 AES-GCM's 4-byte fixed part
	secret []byte // TLS 1.3: this direction's traffic secret, for KeyUpdate
	seq    uint64
}

// newHalf13 sets a TLS 1.3 direction up from its traffic secret.
func newHalf13(s *suite, secret []byte, seq uint64) (*half, error) {
	key, iv, err := s.trafficKeys(secret)
	if err != nil {
		return nil, err
	}
	h, err := newHalf(s, key, iv, seq)
	if err != nil {
		return nil, err
	}
	h.secret = append([]byte(nil), secret...)
	return h, nil
}

// newHalf sets a direction up from its key and IV.
func newHalf(s *suite, key, iv []byte, seq uint64) (*half, error) {
	if len(key) != s.keyLen || len(iv) != s.ivLen {
		return nil, fmt.Errorf("tlshandoff: key of %d bytes and IV of %d for suite %#04x", len(key), len(iv), s.id)
	}
	a, err := s.aead(key)
	if err != nil {
		return nil, err
	}
	return &half{suite: s, aead: a, key: append([]byte(nil), key...), iv: append([]byte(nil), iv...), seq: seq}, nil
}

// update moves a TLS 1.3 direction to its next traffic secret (KeyUpdate).
func (h *half) update() error {
	next, err := h.suite.nextSecret(h.secret)
	if err != nil {
		return err
	}
	nh, err := newHalf13(h.suite, next, 0)
	if err != nil {
		return err
	}
	*h = *nh
	return nil
}

// nonce returns the record's nonce: the IV XOR the sequence number, or in
// TLS 1.2 AES-GCM the fixed IV followed by the explicit part.
func (h *half) nonce(buf *[12]byte, explicit []byte) []byte {
	if h.suite.explicitNonce() {
		copy(buf[:4], h.iv)
		copy(buf[4:], explicit)
		return buf[:]
	}
	copy(buf[:], h.iv)
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], h.seq)
	for i := range seq {
		buf[4+i] ^= seq[i]
	}
	return buf[:]
}

// aad12 is TLS 1.2's additional data: seq, type, version, plaintext length.
func (h *half) aad12(buf *[13]byte, typ byte, n int) []byte {
	binary.BigEndian.PutUint64(buf[:8], h.seq)
	buf[8], buf[9], buf[10] = typ, 3, 3
	binary.BigEndian.PutUint16(buf[11:], uint16(n))
	return buf[:]
}

// seal appends to dst one record of type typ carrying payload (at most
// maxPlaintext bytes), and counts it. The AEAD seals in place, in room
// grown beforehand.
func (h *half) seal(dst []byte, typ byte, payload []byte) []byte {
	var nb [12]byte
	dst = slices.Grow(dst, headerLen+8+len(payload)+1+tagLen)
	start := len(dst)
	if h.suite.version == tls.VersionTLS13 {
		n := len(payload) + 1 + tagLen
		dst = append(dst, typeApplicationData, 3, 3, byte(n>>8), byte(n))
		dst = append(append(dst, payload...), typ)
		body := dst[start+headerLen:]
		h.aead.Seal(body[:0], h.nonce(&nb, nil), body, dst[start:start+headerLen])
		h.seq++
		return dst[:start+headerLen+n]
	}
	var ad [13]byte
	var explicit []byte
	n := len(payload) + tagLen
	if h.suite.explicitNonce() {
		n += 8
		explicit = binary.BigEndian.AppendUint64(nil, h.seq)
	}
	dst = append(dst, typ, 3, 3, byte(n>>8), byte(n))
	dst = append(dst, explicit...)
	body := dst[len(dst):]
	dst = append(dst, payload...)
	h.aead.Seal(body[:0], h.nonce(&nb, explicit), dst[len(dst)-len(payload):], h.aad12(&ad, typ, len(payload)))
	h.seq++
	return dst[:start+headerLen+n]
}

// open authenticates and decrypts the record rec (header included) in
// place, and counts it. It returns the record's content type and its
// plaintext, a slice of rec.
func (h *half) open(rec []byte) (byte, []byte, error) {
	var nb [12]byte
	hdr, body := rec[:headerLen], rec[headerLen:]
	if h.suite.version == tls.VersionTLS13 {
		if hdr[0] != typeApplicationData || len(body) < tagLen+1 {
			return 0, nil, errBadRecordMAC
		}
		plain, err := h.aead.Open(body[:0], h.nonce(&nb, nil), body, hdr)
		if err != nil {
			return 0, nil, errBadRecordMAC
		}
		typ, plain := innerType(plain)
		if typ == 0 || len(plain) > maxPlaintext {
			return 0, nil, fmt.Errorf("tlshandoff: inner plaintext malformed or longer than %d bytes", maxPlaintext)
		}
		h.seq++
		return typ, plain, nil
	}
	var explicit []byte
	if h.suite.explicitNonce() {
		if len(body) < 8 {
			return 0, nil, errBadRecordMAC
		}
		explicit, body = body[:8], body[8:]
	}
	if len(body) < tagLen {
		return 0, nil, errBadRecordMAC
	}
	var ad [13]byte
	plain, err := h.aead.Open(body[:0], h.nonce(&nb, explicit), body, h.aad12(&ad, hdr[0], len(body)-tagLen))
	if err != nil {
		return 0, nil, errBadRecordMAC
	}
	if len(plain) > maxPlaintext {
		return 0, nil, fmt.Errorf("tlshandoff: plaintext of %d bytes, at most %d allowed", len(plain), maxPlaintext)
	}
	h.seq++
	return hdr[0], plain, nil
}

// innerType strips a TLS 1.3 inner plaintext's padding and returns its
// real content type (0: none, all padding) and content.
func innerType(p []byte) (byte, []byte) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0 {
			return p[i], p[:i]
		}
	}
	return 0, nil
}
