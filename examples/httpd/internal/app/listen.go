package app

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/httphandoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// listen makes the listener for -listen and returns how to serve it once
// the process is ready. With -tls-cert, it serves HTTPS: through the
// adapter (its HTTP/1.1 connections move with their TLS state; HTTP/2
// ones stay and end with GOAWAY), or in listeners mode through
// crypto/tls, whose connections drain. *ts is set before Ready, whose
// LoadState gives it the old process's ticket keys.
func listen(cfg config, up *handoff.Upgrader, hs *http.Server, adapter *httphandoff.Server,
	ts **tlshandoff.Server, log *slog.Logger) (serve func() error, addr net.Addr, err error) {
	var tcfg *tls.Config
	if cfg.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
		if err != nil {
			return nil, nil, err
		}
		tcfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"}}
	}
	if tcfg != nil && adapter != nil {
		if *ts, err = adapter.TLS(tcfg, tlshandoff.Options{Upgrader: up, Logger: log}); err != nil {
			return nil, nil, err
		}
		// Tracked by the TLS layer once the handshake is over.
		ln, err := up.ListenPlain("tcp", cfg.listen)
		if err != nil {
			return nil, nil, err
		}
		return func() error { return adapter.ServeTLS(ln) }, ln.Addr(), nil
	}
	ln, err := up.Listen("tcp", cfg.listen)
	switch {
	case err != nil:
		return nil, nil, err
	case adapter != nil:
		return func() error { return adapter.Serve(ln) }, ln.Addr(), nil
	case tcfg != nil:
		hs.TLSConfig = tcfg // net/http serves h2 on a *tls.Conn by itself
		return func() error { return hs.Serve(tls.NewListener(ln, tcfg)) }, ln.Addr(), nil
	}
	return func() error { return hs.Serve(ln) }, ln.Addr(), nil
}

// moveTicketKeys carries the session ticket keys in the state, so that a
// client resumes its TLS session with the new process.
func moveTicketKeys(opts *handoff.Options, ts **tlshandoff.Server) {
	opts.SaveState = func(w io.Writer) error { return (*ts).SaveTicketKeys(w) }
	opts.LoadState = func(r io.Reader) error { return (*ts).LoadTicketKeys(r) }
}
