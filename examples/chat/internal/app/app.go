// Package app is the chat example's process: flags, handoff.Run, the
// upgrade modes, restart mode and the metrics. The gateway itself is
// package server.
//
//	os.Exit(app.Run(os.Args[1:]))
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/handoff-dev/handoff/examples/chat/internal/server"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/httphandoff"
)

// Upgrade modes, as -upgrade-mode names them (httpd's, and restart).
const (
	modeRolling   = "rolling"   // the listener and a snapshot of the rooms, then each connection alone
	modeFull      = "full"      // the listener, every connection and the rooms at once
	modeListeners = "listeners" // the listener only; clients are closed and reconnect
	modeRestart   = "restart"   // no handoff: close everything and execute the binary again
)

var libraryModes = map[string]handoff.Mode{
	modeRolling: handoff.Rolling, modeFull: handoff.AllAtOnce, modeListeners: handoff.ListenersOnly,
}

type config struct {
	listen, pidfile, metrics, control string
	upgradeMode                       string
	args                              []string
}

const usage = `Usage: %[1]s [flags]

%[1]s is a WebSocket chat gateway upgraded with the handoff library:
  GET /ws?room=R&nick=N  join room R as N; "joined R L" comes first, then
                         every message said in R as "ID NICK TEXT"; each
                         text message sent is said in R
  GET /ws/echo           each text message T comes back as "N T", N the
                         number of messages the connection has sent

Signals:
  SIGHUP           upgrade to the binary now at the path this one was started
                   from, in the -upgrade-mode
  SIGTERM, SIGINT  close every connection (1001 going away) and exit 0

Flags:
`

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, filepath.Base(os.Args[0]))
		fs.PrintDefaults()
	}
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8090", "`address` to serve on")
	fs.StringVar(&c.pidfile, "pidfile", "", "`file` to write the serving process's pid to")
	fs.StringVar(&c.metrics, "metrics", "", "`address` to serve /metrics, /alive and /ready on (none if empty)")
	fs.StringVar(&c.control, "control", "", "control socket `path` for handoffctl status and upgrade")
	fs.StringVar(&c.upgradeMode, "upgrade-mode", modeRolling,
		"what SIGHUP does: `mode` rolling (the listener and the rooms first, then each connection alone), "+
			"full (everything at once), listeners (the listener only: clients are closed and reconnect) or "+
			"restart (no handoff: close everything, execute the binary again; clients reconnect)")
	err := fs.Parse(args)
	c.args = fs.Args()
	return c, err
}

func (c config) check() error {
	if len(c.args) > 0 {
		return fmt.Errorf("unexpected argument %q: the server takes flags only (see -h)", c.args[0])
	}
	if _, ok := libraryModes[c.upgradeMode]; !ok && c.upgradeMode != modeRestart {
		return fmt.Errorf("-upgrade-mode %q: want rolling, full, listeners or restart", c.upgradeMode)
	}
	return nil
}

// Run runs a chat process to its end and returns its exit code: 0 after
// a stop or a handover, 1 if it could not start, 2 for a usage error.
func Run(args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log := base.With("pid", os.Getpid())
	if err := cfg.check(); err != nil {
		log.Error("refusing to start", "err", err)
		return 2
	}
	if err := run(cfg, base, log); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func run(cfg config, base, log *slog.Logger) error {
	var up *handoff.Upgrader
	var obs *observer
	hub := server.New(log, func(kind string) { obs.count(kind) })
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", hub.ServeChat)
	mux.HandleFunc("GET /ws/echo", hub.ServeEcho)
	hs := httphandoff.New(&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)})
	opts := handoff.Options{
		App:           "chat",
		PIDFile:       cfg.pidfile,
		ControlSocket: cfg.control,
		Mode:          libraryModes[cfg.upgradeMode],
		Logger:        base,
		NoSignal:      cfg.upgradeMode == modeRestart, // SIGHUP is restart's
		SaveState:     hub.Save,
		// A member whose connection has not arrived 10 min after the
		// snapshot left during the move (a slow one catches up from the
		// room's history when it arrives).
		LoadState: func(r io.Reader) error { return hub.Load(r, 10*time.Minute) },
		Resume: func(c *handoff.Conn, state []byte) {
			if server.IsState(state) {
				hub.Resume(c, state)
			} else {
				hs.Resume(c, state)
			}
		},
	}
	var ln *handoff.Listener
	return handoff.Run(opts, handoff.Service{
		Setup: func(u *handoff.Upgrader) (err error) {
			up = u
			hub.Attach(up)
			if ln, err = up.Listen("tcp", cfg.listen); err != nil {
				return err
			}
			if obs, err = newObserver(up, cfg.metrics); err != nil {
				return err
			}
			if cfg.upgradeMode == modeRestart {
				go restartOnHUP(up, ln, hub, log)
			}
			log.Info("serving", "addr", ln.Addr().String(), "upgraded", up.HasParent(), "upgrade_mode", cfg.upgradeMode)
			return nil
		},
		Serve: func() error {
			obs.Serve(log)
			return hs.Serve(ln)
		},
		// After a rolling or full handover nothing is left here; after a
		// listeners-mode one, and at a stop, the clients are told to go
		// (1012 or 1001) and reconnect.
		Shutdown: func(ctx context.Context) error {
			code := 1001
			if up.Status().Phase == handoff.ProcessHandedOver {
				code = 1012
			}
			n := hub.CloseAll(code)
			log.Info("closed the connections left here", "conns", n)
			return hs.Drain(ctx)
		},
		DrainTimeout: 5 * time.Second,
	})
}

// errClosed reports an error that closing the listener gives.
func errClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed)
}
