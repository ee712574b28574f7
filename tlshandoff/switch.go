package tlshandoff

import (
	"crypto/tls"
	"fmt"
)

// Key log labels crypto/tls writes (NSS key log format).
const (
	labelClientTraffic = "CLIENT_TRAFFIC_SECRET_0"
	labelServerTraffic = "SERVER_TRAFFIC_SECRET_0"
	labelTLS12         = "CLIENT_RANDOM"
)

// Facts are what the switch from crypto/tls to the record layer found:
// the records crypto/tls had already sent and received under the
// application keys, which set the first sequence numbers of each
// direction. Tests pin them for each version of crypto/tls.
type Facts struct {
	// ReadSeq and WriteSeq are the sequence numbers the record layer
	// starts at: the records under the final keys that crypto/tls read
	// (TLS 1.2: the client's Finished) and wrote (TLS 1.2: the server's
	// Finished; TLS 1.3: its NewSessionTicket messages).
	ReadSeq, WriteSeq uint64
	// Written lists the content type of each record WriteSeq counts; a
	// handshake record is 0x80 | its first message's type (0x84:
	// NewSessionTicket, 0x94: Finished).
	Written []byte
}

// halves builds the record layer's two directions from what the
// handshake left in h, given the connection's negotiated parameters. It
// returns why the connection cannot move, if it cannot.
func halves(h *hsConn, st tls.ConnectionState) (in, out *half, f Facts, why string) {
	s := lookupSuite(st.Version, st.CipherSuite)
	if s == nil {
		return nil, nil, f, fmt.Sprintf("%s with %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	var err error
	if st.Version == tls.VersionTLS13 {
		in, out, err = halves13(h, s)
	} else {
		in, out, err = halves12(h, s, st.DidResume)
	}
	if err != nil {
		return nil, nil, f, err.Error()
	}
	var nIn int
	nIn, _ = countOpen(in, h.in)
	_, f.Written = countOpen(out, h.out)
	f.ReadSeq, f.WriteSeq = in.seq, out.seq
	// crypto/tls must hold nothing of the application's records: in TLS
	// 1.3 it reads none under the application keys, in TLS 1.2 only the
	// client's Finished. More would be records it may have buffered.
	if want := wantRead(st.Version); nIn != want {
		return nil, nil, f, fmt.Sprintf("crypto/tls read %d records under the final keys, not %d", nIn, want)
	}
	return in, out, f, ""
}

func wantRead(version uint16) int {
	if version == tls.VersionTLS13 {
		return 0
	}
	return 1
}

func halves13(h *hsConn, s *suite) (in, out *half, err error) {
	cs, ss := h.secret(labelClientTraffic), h.secret(labelServerTraffic)
	if cs == nil || ss == nil {
		return nil, nil, fmt.Errorf("crypto/tls logged no traffic secrets")
	}
	if in, err = newHalf13(s, cs, 0); err != nil {
		return nil, nil, err
	}
	out, err = newHalf13(s, ss, 0)
	return in, out, err
}

func halves12(h *hsConn, s *suite, resumed bool) (in, out *half, err error) {
	master := h.secret(labelTLS12)
	if master == nil && resumed {
		// crypto/tls logs the master secret of full handshakes only
		// (Go 1.26 handshake_server.go); a resumed session's came in
		// its ticket, if this package wrote it (Server.wrapSession).
		master = h.master()
	}
	if master == nil {
		return nil, nil, fmt.Errorf("TLS 1.2 resumed session: no master secret (ticket not written by this package)")
	}
	if len(h.serverRandom) != 32 || len(h.clientHi) != 32 {
		return nil, nil, fmt.Errorf("handshake randoms not seen")
	}
	cKey, sKey, cIV, sIV := s.keyBlock12(master, h.clientHi, h.serverRandom)
	if in, err = newHalf(s, cKey, cIV, 0); err != nil {
		return nil, nil, err
	}
	out, err = newHalf(s, sKey, sIV, 0)
	return in, out, err
}
