// Package app is the httpd example: an http.Server whose listener (and,
// in full mode, whose connections) a new binary takes over at SIGHUP.
//
//	os.Exit(app.Run(os.Args[1:]))
//
// Handlers (handlers.go): GET / answers "<version> <pid>\n"; GET
// /slow?ms=N answers the same after N milliseconds (a request in flight
// across an upgrade); POST /echo reads the request's body whole (at most
// 1 MiB, else 413), then answers it.
//
// Flags: -listen ADDR, -pidfile PATH, -metrics ADDR (/metrics, /alive,
// /ready from package metrics, on a listener inherited across upgrades),
// -control PATH (handoffctl's socket), -version NAME (default v1),
// -upgrade-mode rolling|full|listeners (default rolling), -drain-timeout
// DUR, -upgrade-timeout DUR, -park-timeout DUR (full mode: how long the
// requests in flight may take to end before the upgrade rolls back;
// default handoff.DefaultParkTimeout), -tls-cert FILE -tls-key FILE
// (serve HTTPS: TLS 1.2 and 1.3, h2 and http/1.1 by ALPN; in rolling and
// full mode through httphandoff's TLS, whose HTTP/1.1 connections move
// with their TLS state and whose HTTP/2 ones stay and end with GOAWAY
// after the upgrade, or after -h2-linger DUR; in listeners mode through
// crypto/tls). With both -metrics and -tls-cert, /metrics counts the
// chain's TLS handshakes: handoff_tls_handshakes_total (package
// tlsmetrics), or httpd_tls_handshakes_total in listeners mode.
//
// SIGHUP upgrades to whatever binary is now at the path this one was
// started from:
//
//   - rolling (the default, as package httphandoff recommends for HTTP: no
//     state here must move with every connection at once): the listener
//     moves first and the new process accepts from the commit on; then
//     each keep-alive connection moves alone at its next idle moment, and
//     the new process serves it at once. A slow request delays only its
//     own connection, and cannot roll the upgrade back.
//   - listeners: tableflip's way. The new process inherits the listener;
//     once it is ready the old one stops accepting and runs
//     http.Server.Shutdown for at most -drain-timeout: idle keep-alive
//     connections are closed at once, busy ones after their reply (sent
//     with "Connection: close"), and whatever is left at the timeout is
//     closed. Clients reconnect to the new process.
//   - full: the connections themselves move to the new process, all at
//     once, through the net/http adapter (package httphandoff): an idle
//     keep-alive connection moves at once with what it has sent, one with
//     a request in flight after its reply, and every moved connection
//     waits for the slowest; one not idle within -park-timeout rolls the
//     upgrade back. Clients never reconnect.
//
// The process's life is handoff.Run's: SIGHUP, SIGTERM or SIGINT (a stop:
// Upgrader.Stop, then the same graceful shutdown), the wait for either.
//
// Exit codes: 0 after a stop or a handover, 1 if the server failed, 2 for
// a usage error.
package app
