package tlshandoff

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"testing"
)

// served is what the server side saw of one connection.
type served struct {
	movable bool
	why     string
	facts   Facts
	state   tls.ConnectionState
}

// echoReporting echoes after telling the test what the handshake gave.
func echoReporting(ch chan<- served) func(*Conn) {
	return func(c *Conn) {
		ok, why := c.Movable()
		ch <- served{ok, why, c.Facts(), c.ConnectionState()}
		echo(c)
	}
}

// goClient restricts Go's client to one version and, for TLS 1.2, one
// suite (TLS 1.3's suites are not configurable in crypto/tls).
func goClient(t *testing.T, version, suite uint16) *tls.Config {
	cfg := clientConfig(t)
	cfg.MinVersion, cfg.MaxVersion = version, version
	if version < tls.VersionTLS13 && suite != 0 {
		cfg.CipherSuites = []uint16{suite}
	}
	return cfg
}

// TestRecordLayerGoClient: for each suite Go's client can be held to,
// the handshake is crypto/tls's, then the record layer is this
// package's: a megabyte each way, in records up to the maximum size,
// and the sequence numbers at the switch are those measured on Go 1.26.
// Without a session cache Go's client asks for no ticket (no
// psk_key_exchange_modes), so in TLS 1.3 nothing was written or read
// under the application keys; in TLS 1.2 each side's Finished was.
// TestResumption has the tickets.
func TestRecordLayerGoClient(t *testing.T) {
	cases := []struct {
		version, suite uint16
		facts          Facts
	}{
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, Facts{0, 0, nil}},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, Facts{1, 1, []byte{0x94}}},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, Facts{1, 1, []byte{0x94}}},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, Facts{1, 1, []byte{0x94}}},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, Facts{1, 1, []byte{0x94}}},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, Facts{1, 1, []byte{0x94}}},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, Facts{1, 1, []byte{0x94}}},
	}
	for _, tc := range cases {
		t.Run(tls.CipherSuiteName(tc.suite), func(t *testing.T) {
			ch := make(chan served, 1)
			addr := listen(t, newServer(t, serverConfig(t)), echoReporting(ch))
			c, err := tls.Dial("tcp", addr.String(), goClient(t, tc.version, tc.suite))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			roundTrip(t, c, []byte("hello"))
			s := <-ch
			if !s.movable || s.state.CipherSuite != tc.suite || s.state.Version != tc.version {
				t.Fatalf("movable %v (%s), %s %s", s.movable, s.why, tls.VersionName(s.state.Version), tls.CipherSuiteName(s.state.CipherSuite))
			}
			checkFacts(t, s.facts, tc.facts)
			roundTrip(t, c, randomBytes(t, 1<<20))
			roundTrip(t, c, randomBytes(t, maxPlaintext))
			roundTrip(t, c, randomBytes(t, 3*maxPlaintext+1))
		})
	}
}

// TestNotMovable: what the record layer does not carry is served by
// crypto/tls to the end, and says why.
func TestNotMovable(t *testing.T) {
	cases := []struct {
		name           string
		version, suite uint16
	}{
		{"TLS 1.2 CBC", tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA},
		{"TLS 1.1", tls.VersionTLS11, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan served, 1)
			s := newServer(t, serverConfig(t))
			addr := listen(t, s, echoReporting(ch))
			c, err := tls.Dial("tcp", addr.String(), goClient(t, tc.version, tc.suite))
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c, randomBytes(t, 100<<10))
			got := <-ch
			if got.movable || got.why == "" {
				t.Fatalf("movable %v, why %q", got.movable, got.why)
			}
			t.Logf("not movable: %s", got.why)
			if st := s.Stats(); st.Unmovable != 1 || st.Movable != 0 || st.OpenUnmovable != 1 {
				t.Fatalf("stats %+v", st)
			}
			c.Close()
		})
	}
}

func checkFacts(t *testing.T, got, want Facts) {
	t.Helper()
	if got.ReadSeq != want.ReadSeq || got.WriteSeq != want.WriteSeq || !bytes.Equal(got.Written, want.Written) {
		t.Fatalf("facts %+v, want %+v", got, want)
	}
}

// TestResumption: resumed sessions move. A TLS 1.3 resumption's secrets
// are logged as a full handshake's; crypto/tls logs no master secret
// when it resumes a TLS 1.2 session (Go 1.26, handshake_server.go), so
// the ticket carried it (Server.wrapSession). With a
// session cache, Go's client asks for tickets: in TLS 1.3 crypto/tls
// writes one NewSessionTicket under the application keys after its
// Finished, in its first flight, at every handshake (resumed ones too);
// in TLS 1.2 it sends the ticket before its ChangeCipherSpec, so only
// the Finished messages count.
func TestResumption(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			ch := make(chan served, 2)
			addr := listen(t, newServer(t, serverConfig(t)), echoReporting(ch))
			cfg := goClient(t, version, 0)
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			for i := range 2 {
				c, err := tls.Dial("tcp", addr.String(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				// The ticket comes with the server's first flight (TLS
				// 1.3) or handshake (1.2); a round trip reads it.
				roundTrip(t, c, []byte("x"))
				s := <-ch
				if s.state.DidResume != (i == 1) {
					t.Fatalf("connection %d: DidResume %v", i, s.state.DidResume)
				}
				if !s.movable {
					t.Fatalf("connection %d: movable %v (%s)", i, s.movable, s.why)
				}
				if version == tls.VersionTLS13 {
					checkFacts(t, s.facts, Facts{0, 1, []byte{0x84}})
				} else {
					checkFacts(t, s.facts, Facts{1, 1, []byte{0x94}})
				}
				c.Close()
			}
		})
	}
}

// TestCloseNotify: the client's close_notify is the end of the stream.
func TestCloseNotify(t *testing.T) {
	got := make(chan error, 1)
	addr := listen(t, newServer(t, serverConfig(t)), func(c *Conn) {
		_, err := io.ReadAll(c)
		got <- err
	})
	c, err := tls.Dial("tcp", addr.String(), goClient(t, tls.VersionTLS13, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("ReadAll: %v, want the stream's end", err)
	}
	// The server's Close sends its own close_notify: the client reads EOF.
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("client read: %v, want EOF", err)
	}
}

// TestConfigFeatures: what the application's tls.Config asks for still
// happens: its GetConfigForClient picks the config (here by ALPN), ALPN
// is negotiated, and its own
// KeyLogWriter still gets crypto/tls's lines (the package's is
// separate and writes nowhere).
func TestConfigFeatures(t *testing.T) {
	var userLog bytes.Buffer
	inner := serverConfig(t)
	inner.NextProtos = []string{"echo/1"}
	inner.KeyLogWriter = &userLog
	outer := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return inner, nil }}
	ch := make(chan served, 1)
	addr := listen(t, newServer(t, outer), echoReporting(ch))
	cfg := goClient(t, tls.VersionTLS13, 0)
	cfg.NextProtos = []string{"echo/1"}
	c, err := tls.Dial("tcp", addr.String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, []byte("x"))
	s := <-ch
	if !s.movable || s.state.NegotiatedProtocol != "echo/1" {
		t.Fatalf("movable %v (%s), ALPN %q", s.movable, s.why, s.state.NegotiatedProtocol)
	}
	if !bytes.Contains(userLog.Bytes(), []byte(labelServerTraffic)) {
		t.Fatalf("the application's KeyLogWriter got %q", userLog.String())
	}
}
