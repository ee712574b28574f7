package tlshandoff

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// suite is a cipher suite whose record layer this package runs: an AEAD
// and the hash of its key schedule (HKDF in TLS 1.3, the PRF in TLS 1.2).
type suite struct {
	id      uint16
	version uint16
	keyLen  int
	ivLen   int // TLS 1.2 AES-GCM keeps 4 bytes fixed and sends 8 (RFC 5288)
	hash    func() hash.Hash
	aead    func(key []byte) (cipher.AEAD, error)
}

// explicitNonce reports whether each record carries 8 bytes of its nonce:
// TLS 1.2 AES-GCM does (RFC 5288); ChaCha20-Poly1305 (RFC 7905) and every
// TLS 1.3 suite derive the whole nonce from the sequence number.
func (s *suite) explicitNonce() bool { return s.ivLen == 4 }

// suites lists what moves. Anything else negotiated (CBC, RSA key
// exchange, TLS 1.1 and older) is served by crypto/tls and stays put.
var suites = []suite{
	{tls.TLS_AES_128_GCM_SHA256, tls.VersionTLS13, 16, 12, sha256.New, newGCM},
	{tls.TLS_AES_256_GCM_SHA384, tls.VersionTLS13, 32, 12, sha512.New384, newGCM},
	{tls.TLS_CHACHA20_POLY1305_SHA256, tls.VersionTLS13, 32, 12, sha256.New, chacha20poly1305.New},
	{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.VersionTLS12, 16, 4, sha256.New, newGCM},
	{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.VersionTLS12, 16, 4, sha256.New, newGCM},
	{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.VersionTLS12, 32, 4, sha512.New384, newGCM},
	{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.VersionTLS12, 32, 4, sha512.New384, newGCM},
	{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, tls.VersionTLS12, 32, 12, sha256.New, chacha20poly1305.New},
	{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.VersionTLS12, 32, 12, sha256.New, chacha20poly1305.New},
}

// lookupSuite returns the suite negotiated as id under version, or nil if
// this package cannot run its record layer.
func lookupSuite(version, id uint16) *suite {
	for i := range suites {
		if suites[i].id == id && suites[i].version == version {
			return &suites[i]
		}
	}
	return nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// expandLabel is TLS 1.3's HKDF-Expand-Label with an empty context (RFC
// 8446, section 7.1), all the record layer needs: keys, IVs and the next
// traffic secret of a KeyUpdate.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) ([]byte, error) {
	full := "tls13 " + label
	info := binary.BigEndian.AppendUint16(nil, uint16(n))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, 0) // empty context
	return hkdf.Expand(h, secret, string(info), n)
}

// trafficKeys derives a TLS 1.3 direction's key and IV from its traffic
// secret (RFC 8446, section 7.3).
func (s *suite) trafficKeys(secret []byte) (key, iv []byte, err error) {
	if key, err = expandLabel(s.hash, secret, "key", s.keyLen); err != nil {
		return nil, nil, err
	}
	iv, err = expandLabel(s.hash, secret, "iv", 12)
	return key, iv, err
}

// nextSecret is a KeyUpdate's application_traffic_secret_N+1.
func (s *suite) nextSecret(secret []byte) ([]byte, error) {
	return expandLabel(s.hash, secret, "traffic upd", s.hash().Size())
}

// keyBlock12 derives TLS 1.2's keys from the master secret (RFC 5246,
// section 6.3): AEAD suites have no MAC keys, so the block is the client
// and server write keys, then the client and server IVs.
func (s *suite) keyBlock12(master, clientRandom, serverRandom []byte) (cKey, sKey, cIV, sIV []byte) {
	seed := append(append([]byte(nil), serverRandom...), clientRandom...)
	kb := prf12(s.hash, master, "key expansion", seed, 2*s.keyLen+2*s.ivLen)
	cKey, kb = kb[:s.keyLen], kb[s.keyLen:]
	sKey, kb = kb[:s.keyLen], kb[s.keyLen:]
	cIV, sIV = kb[:s.ivLen], kb[s.ivLen:]
	return cKey, sKey, cIV, sIV
}

// prf12 is TLS 1.2's PRF, P_hash(secret, label + seed) (RFC 5246, section 5).
func prf12(h func() hash.Hash, secret []byte, label string, seed []byte, n int) []byte {
	labelSeed := append([]byte(label), seed...)
	mac := hmac.New(h, secret)
	a := labelSeed // A(0)
	out := make([]byte, 0, n+mac.Size())
	for len(out) < n {
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(nil)
		mac.Reset()
		mac.Write(a)
		mac.Write(labelSeed)
		out = mac.Sum(out)
	}
	return out[:n]
}
