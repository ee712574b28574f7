// Package tlshandoff serves TLS connections that can move to the next
// process at an upgrade, on the standard crypto/tls: no fork of it, and no
// new handshake for the client.
//
// crypto/tls does every handshake, so every certificate, ALPN,
// client-authentication and session-ticket feature of tls.Config works.
// It does it over a transport that hands it one TLS record per Read, so
// that when the handshake is over crypto/tls has read nothing past the
// client's Finished; the connection's traffic secrets come from a
// KeyLogWriter of its own (set through GetConfigForClient, never the
// application's, which still gets its lines if it has one). From then on
// this package runs the record layer itself, and the whole state of the
// connection (keys, both sequence numbers, bytes read and not consumed)
// is a few hundred bytes that MarshalState or Park hand to the next
// process, where Server.Resume rebuilds the connection on the same TCP
// connection.
//
//	srv, err := tlshandoff.NewServer(tlsConfig, tlshandoff.Options{Upgrader: up})
//	ln, err := up.ListenPlain("tcp", addr) // tracked after the handshake, if movable
//	tl := srv.NewListener(ln)
//	// handoff.Options.Resume, in the new process:
//	//	c, app, err := srv.Resume(hc, state)
//
// What moves: TLS 1.3 with TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384
// or TLS_CHACHA20_POLY1305_SHA256, and TLS 1.2 with ECDHE and AES-GCM or
// ChaCha20-Poly1305, full handshakes and resumptions (a TLS 1.2 ticket
// carries its master secret, which crypto/tls does not log when it
// resumes). Everything else (other suites, TLS 1.1 and older, a TLS 1.2
// session resumed from a ticket this package did not write) is served
// by crypto/tls to the
// end, as tls.Server would; Conn.Movable says so and why, the Server logs
// a line and counts it (Stats), and the application drains it at an
// upgrade (Server.Drain). With Options.Upgrader the Server also logs, at
// each upgrade, how many of its connections move and how many stay to
// drain (package metrics/tlsmetrics exports the same counts).
//
// After the handshake the record layer handles what a client may send:
// application data in records up to the maximum size, TLS 1.3 KeyUpdate
// (answering update_requested with a KeyUpdate of its own; Conn.KeyUpdate
// sends one), close_notify (Read returns io.EOF) and fatal alerts (an
// error). A record that does not authenticate gets a bad_record_mac
// alert and ends the connection; any other post-handshake message gets
// unexpected_message and ends it with ErrUnsupportedMessage, and a TLS
// 1.2 renegotiation gets no_renegotiation and ends it with
// ErrRenegotiation, as crypto/tls's server would.
//
// Session tickets are encrypted with the Server's keys, which move too
// (MarshalTicketKeys, SetTicketKeys), so that a client resumes in the
// next process with a ticket from this one.
//
// HTTPS: package httphandoff serves net/http over this package (its
// Server.TLS and ServeTLS): HTTP/1.1 connections move between requests,
// and HTTP/2 ones stay (Options.Stay) and end with GOAWAY.
//
// Secrets are never written to disk or logs by this package: states and
// ticket keys are meant for the handoff channel only.
package tlshandoff
