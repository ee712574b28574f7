// Package httphandoff serves an unmodified net/http server on a
// handoff.Listener so that, at an upgrade, its keep-alive connections move
// to the new process instead of being closed: no FIN, reset, empty reply
// or error status reaches a client because of an upgrade.
//
//	hs := httphandoff.New(srv) // srv is an *http.Server with its handlers
//	up, err := handoff.New(handoff.Options{Resume: hs.Resume /* ... */})
//	ln, err := up.Listen("tcp", addr)
//	err = up.Ready(ctx)
//	go hs.Serve(ln)
//	<-up.Exit() // handed over: every connection now belongs to the new process
//	up.Exiting() // a stop that reached this process is passed on before it exits
//
// How a connection leaves. net/http keeps no state of a connection between
// requests but the bytes its bufio reader read ahead, and none of a request
// whose head it has not finished reading but those bytes and the lines it
// has parsed. So a connection may leave while net/http waits for the next
// request of a keep-alive connection (the Read behind Peek(4), in
// StateIdle), before or during the first request head of a new connection,
// and while it reads a request head: at such a moment, net/http holds
// nothing but bytes of a head no handler has seen. The connection follows
// net/http's cycle from its ConnState hooks and the read deadlines net/http
// sets, keeps a copy of the head it delivers, and, with an upgrade
// waiting, gives the whole head back to the handoff.Conn and makes
// net/http's Read return a timeout: net/http takes that for a quiet client
// and closes the connection (if it held part of a line, it first parses
// that part as a line and fails; what it writes is dropped), and Close
// keeps the fd, which is parked and handed over. A connection with a
// request in flight (a handler running, a body being read or discarded)
// finishes it here and leaves at its next idle moment, and so does one
// whose head is longer than 16 KiB or came pipelined behind the previous
// request (net/http read its first bytes ahead with that one). In the new
// process, Resume queues the connection for the http.Server's next Accept:
// it is served as if just accepted, its bytes first. If the upgrade rolls
// back, it is served again here the same way.
//
// This relies on the order in which net/http (Go 1.26.6 and later: the
// module's floor, set by this package) calls ConnState,
// SetReadDeadline and Read; TestNetHTTPAssumptions and TestNetHTTPCycle pin
// it, and fail loudly on a Go whose net/http behaves otherwise.
//
// Limits:
//
//   - With handoff's default AllAtOnce mode, every connection must reach
//     its moment within Options.ParkTimeout, or the upgrade rolls back
//     (nothing is lost), and clients of connections that left first wait
//     for the slowest in-flight request. With Options.Mode handoff.Rolling
//     (an HTTP server shares no state that must move atomically), each
//     connection moves as soon as it is idle and is served by the new
//     process at once; a slow request delays only its own connection, and
//     one still running at Options.MoveTimeout is drained or closed as
//     Options.Stragglers says.
//   - HTTP/2 connections cannot leave: HTTP/2 is never idle in this
//     sense. Served over TLS (ALPN h2, through golang.org/x/net/http2 with
//     the http.Server's settings and handler), they stay in the old
//     process, never tracked, so they neither hold nor roll back an
//     upgrade; once the old process stops accepting (at the commit; in
//     Rolling mode once the move is over, when handoff closes a
//     ListenPlain listener) each gets GOAWAY, finishes its streams in
//     flight and closes, and its client opens a new connection to the new
//     process (Go's client: 0 failed requests across 10 upgrades,
//     TestH2AcrossUpgrades). Drain, after Exit, waits for them. So do
//     HTTPS connections whose TLS cannot move (tlshandoff.Conn.Movable):
//     they are served here and closed once idle.
//   - A hijacked HTTPS connection (a wss WebSocket) is parked by the
//     application as a hijacked HTTP one is, with its TLS: TLSConn(nc)
//     returns the tlshandoff.Conn beneath (and any plaintext given back
//     at a rolled-back upgrade, to read first); the library asks the
//     handoff.Conn beneath TLS (tc.Handoff()) to park, Read returns
//     handoff.ErrPark, and tc.Park(state) parks it with its TLS state. In
//     the new process Options.Resume gets a state tlshandoff.IsState
//     recognizes: resume it with the tlshandoff.Server (Server.Resume
//     would take it for HTTP). Package wshandoff does all this for
//     gorilla/websocket and coder/websocket, its state wrapping the TLS
//     state so that its IsWebSocket tells it apart. A hijacked
//     connection whose TLS cannot move (tlshandoff.Conn.Movable) has no
//     TLSConn: it stays, and an upgrade waits for it as for a request in
//     flight.
//   - A hijacked connection (a WebSocket) is the application's, and from
//     the hijack on the library asks it to park as any handoff.Conn: take
//     it with Conn(nc), give back with Unread what the hijack's
//     bufio.Reader holds, read messages with Next, and at handoff.ErrPark
//     call Park with a non-empty state at a message boundary. In the new
//     process, Options.Resume gets that state: pass the connection to
//     Server.Resume when IsHTTP(state), and serve it with your protocol
//     otherwise. TestHijackedConnection does exactly this.
//
// HTTPS. Server.TLS makes the tlshandoff.Server (give it the Upgrader)
// and ServeTLS serves a listener from Upgrader.ListenPlain: the TLS layer
// tracks a connection once its handshake is over, and an HTTP/1.1 one
// moves exactly as a plain one does, at the same moments: its TLS state
// (keys, sequence numbers, records not yet read) travels with
// httphandoff's state and the bytes of a head net/http held, and the
// client sees the same TCP connection and no new handshake. Handlers see
// r.TLS, in the new process too (net/http sets it from any connection
// with a ConnectionState method).
//
//	hs := httphandoff.New(srv)
//	var ts *tlshandoff.Server
//	up, err := handoff.New(handoff.Options{Resume: hs.Resume,
//		SaveState: /* ts.MarshalTicketKeys() */, LoadState: /* ts.SetTicketKeys */})
//	ts, err = hs.TLS(tlsConfig, tlshandoff.Options{Upgrader: up})
//	ln, err := up.ListenPlain("tcp", ":443")
//	err = up.Ready(ctx)
//	go hs.ServeTLS(ln)
//	<-up.Exit()
//	err = hs.Drain(ctx) // HTTP/2 connections: GOAWAY (after HTTP2Linger), streams finish
//	up.Exiting()
//
// How an HTTP/2 connection ends: RFC 9113 §6.8's graceful shutdown. The
// first GOAWAY names stream 2^31-1 (no new streams; those already on
// their way are welcome) and is followed by a PING; once the client's
// ACK has come back (a round trip: every stream it sent before it read
// the GOAWAY has arrived), the final GOAWAY names the last stream
// processed, the streams finish, and the connection closes. x/net/http2
// sends only the final GOAWAY, so the package writes the first one and
// the PING between x/net's frames and starts x/net's shutdown when the
// ACK has gone by (h2goaway.go). No stream a client sent is refused
// (TestH2NoStreamRefused: a stream sent after the first GOAWAY was
// written, before the client read it, is answered). A client that never
// answers the PING gets the final GOAWAY 15 s later.
//
// When it ends: Server.HTTP2Linger. By default (zero) at once, when the
// old process stops accepting, as nginx does at a reload: a client that
// sends its next requests on a new connection after GOAWAY, as RFC 9113
// intends (Go's does: TestH2AcrossUpgrades), reaches the new process
// and loses none; the old process is gone one round trip after its
// longest request. A client that never opens a new connection does lose the
// requests it had yet to send: h2load counts each as failed (after one
// upgrade, 192 of 300; TestH2LoadGoAway pins it), and some load
// generators and hand-written clients behave alike. For them, set
// HTTP2Linger: the old process goes on serving its HTTP/2 connections,
// new streams included, until their clients close them or the linger
// ends (then the graceful GOAWAY as above); h2load across 10 upgrades
// then has 0 failed requests and goes on being answered after each
// upgrade (TestH2LoadAcrossUpgrades). The price: for up to HTTP2Linger,
// those clients are served by the old binary (a fix in the new one does
// not reach them), the old process and its memory stay, and the
// application's Drain must be given a context that outlasts the linger
// plus its longest request (at the context's end Drain closes what is
// left). Like Envoy's drain time, keep it bounded: minutes, not hours.
//
// A connection's idle deadline moves with it: the one net/http set for its
// wait for the next request (IdleTimeout, else ReadTimeout, else none; for
// a new connection, the header timeout from its accept, or none). Until
// the connection's next byte, the new process (or this one, after a
// rollback) keeps that deadline, or none, rather than apply its header
// timeout to a client that is merely idle; from that byte on net/http's
// own timeouts count. So a client idle across upgrades times out as it
// would have without them, and not sooner; a request that came while the
// connection moved is answered even if the deadline passed meanwhile (on
// Linux, where the receive queue can be looked at). A request head that
// moved is given the new process's ReadHeaderTimeout anew.
package httphandoff
