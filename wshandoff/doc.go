// Package wshandoff moves the WebSocket connections of a
// gorilla/websocket (v1.5.3) or coder/websocket (v1.8.15) server to the
// new process at an upgrade: the client keeps its TCP connection (and,
// for wss, its TLS session), sees no new handshake of either kind, and
// loses no message.
//
// The server upgrades its HTTP requests through this package
// (Upgrader.Upgrade for gorilla, Accept for coder), on connections that
// package handoff tracks: those of an httphandoff.Server (HTTP, and
// HTTPS through its TLS, for wss) or of a handoff.Listener. It gives
// each connection's state as it parks (OnPark, OnParkCoder), and its
// handoff.Options.Resume rebuilds the library's connection in the new
// process:
//
//	resume := func(c *handoff.Conn, state []byte) {
//		if !wshandoff.IsWebSocket(state) {
//			hs.Resume(c, state) // an HTTP connection
//			return
//		}
//		ws, app, err := u.ResumeTLS(ts, c, state) // ts: hs.TLS's; nil without wss (or u.Resume)
//		// serve ws on, from the state app
//	}
//
// What moves with a connection: the bytes the client sent that the
// library has not read (frames whole or in part, pings and close frames
// among them), what the opening handshake negotiated (subprotocol,
// permessage-deflate), whether the server has sent its close frame, the
// application's state, and, for wss, the TLS state (keys, sequence
// numbers, records read and not consumed; see package tlshandoff). A
// Conn parks between messages in both directions (see Conn): a
// fragmented message in flight is finished by the old process first. A
// ping the library has read is answered by the old process; one it has
// not read moves and is answered by the new one.
//
// If the upgrade rolls back, each connection goes on in the old process
// where it stopped: the library's read returns the next frame as if
// nothing had happened, pings and close frames that came meanwhile are
// answered, and nothing is lost or sent twice (TestRollback, with the
// new process failing after every connection parked, and killed while
// one waits inside a message; ws and wss).
//
// permessage-deflate is served without context takeover in both
// directions (server_no_context_takeover; client_no_context_takeover):
// a compression window lives inside each library, unexported, and
// could not move. gorilla/websocket negotiates only that; Accept
// serves coder's CompressionContextTakeover as
// CompressionNoContextTakeover. A client offering context takeover (a
// browser's plain "permessage-deflate") gets no context takeover in the
// 101, and its messages go compressed, each on its own, across upgrades
// (TestCompression); RFC 7692 clients accept that answer.
//
// wss: the hijack of a connection that httphandoff's HTTPS server served
// finds the tlshandoff.Conn beneath it (httphandoff.TLSConn); the frames
// are its plaintext, and the connection parks with the TLS state inside
// its own. The new process resumes the TLS session with its
// tlshandoff.Server (ResumeTLS, Upgrader.ResumeTLS, ResumeCoderTLS). A
// connection whose TLS cannot move (tlshandoff.Conn.Movable: a suite
// this package does not carry, say) is refused at the hijack with
// ErrNotHandoff, as one no handoff.Listener tracks.
//
// The tests run the test binary as the server of each library and
// upgrade it with SIGHUP while real clients of both libraries (gorilla
// ones for wss) hold their connections: every message answered once, in
// order, with the count the connection carries as its state; one
// WebSocket handshake, and one TLS handshake, per connection.
package wshandoff
