package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/handoff-dev/handoff/examples/internal/peer"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/httphandoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// Upgrade modes, as -upgrade-mode names them.
const (
	// modeFull hands the listener and every connection to the new process.
	modeFull = "full"
	// modeListeners hands over the listener alone, as tableflip does; the
	// old process drains its connections with http.Server.Shutdown.
	modeListeners = "listeners"
	// modeRolling hands the listener over first, then each connection
	// alone as soon as it is idle: a slow request delays only its own.
	modeRolling = "rolling"
)

// config is what the flags say.
type config struct {
	listen         string
	pidfile        string
	metrics        string
	control        string
	version        string
	upgradeMode    string
	drainTimeout   time.Duration
	upgradeTimeout time.Duration
	parkTimeout    time.Duration
	tlsCert        string // PEM files: serve HTTPS if set
	tlsKey         string
	h2Linger       time.Duration // httphandoff.Server.HTTP2Linger
	plain          bool          // serve without the library (plain.go)
	args           []string      // after the flags: there must be none
}

// usage is what -h prints before the flags.
const usage = `Usage: %[1]s [flags]

%[1]s is an HTTP server upgraded with the handoff library. It answers
  GET /          "<version> <pid>"
  GET /slow?ms=N the same after N milliseconds
  POST /echo     the request's body
over HTTPS with -tls-cert and -tls-key (HTTP/2 too).

Signals:
  SIGHUP           upgrade to the binary now at the path this one was
                   started from, in the -upgrade-mode.
  SIGTERM, SIGINT  stop: close the listener, let requests in flight finish
                   for at most -drain-timeout, exit 0.

` + peer.Usage + `
Exit status: 0 after a stop or a handover; 1 if the server failed; 2 for a
usage error or a mode that is not available yet.

Flags:
`

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, filepath.Base(os.Args[0]))
		fs.PrintDefaults()
	}
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "`address` to serve HTTP on")
	fs.StringVar(&c.pidfile, "pidfile", "", "`file` to write the ready process's pid to")
	fs.StringVar(&c.metrics, "metrics", "", "`address` to serve /metrics, /alive and /ready on (none if empty)")
	fs.StringVar(&c.control, "control", "", "control socket `path` for handoffctl status and upgrade")
	fs.StringVar(&c.version, "version", "v1", "version `name` that GET / answers")
	// Rolling by default, as httphandoff recommends for HTTP: the server
	// shares no state that must move with every connection at once, and a
	// slow request then delays only its own connection instead of holding
	// every client until it ends, or rolling the upgrade back at the park
	// timeout.
	fs.StringVar(&c.upgradeMode, "upgrade-mode", modeRolling,
		"what SIGHUP does: `mode` rolling (hand over the listener first, then each connection alone as soon as "+
			"it is idle, through the httphandoff adapter), full (the listener and every connection at once) or "+
			"listeners (the listener only; the old process drains its connections and closes them)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 5*time.Second,
		"how long requests in flight may take to finish after a listeners-mode upgrade or a stop")
	fs.DurationVar(&c.upgradeTimeout, "upgrade-timeout", 0, "bound on an upgrade (0: the library default)")
	fs.DurationVar(&c.parkTimeout, "park-timeout", 0,
		"full mode: how long every connection may take to finish its request in flight and park, or the upgrade "+
			"rolls back; the upgrade's pause grows with it, and -upgrade-timeout must leave room for it "+
			"(0: the library default, "+handoff.DefaultParkTimeout.String()+")")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "certificate `file` (PEM, the chain): serve HTTPS, TLS 1.2 and 1.3, "+
		"h2 and http/1.1 by ALPN (needs -tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "private key `file` (PEM) of -tls-cert")
	fs.DurationVar(&c.h2Linger, "h2-linger", 0,
		"with -tls-cert, rolling and full mode: how long the old process goes on serving its HTTP/2 connections "+
			"after an upgrade (for clients that never reconnect, such as h2load) before the graceful GOAWAY "+
			"(0: GOAWAY at once); the drain after the upgrade waits this much longer")
	fs.BoolVar(&c.plain, "plain", false,
		"serve the same handlers on a plain net/http server, without the handoff library: no upgrades "+
			"(SIGHUP is ignored), no -metrics, -control or TLS; the baseline make bench-steady compares with")
	err := fs.Parse(args)
	c.args = fs.Args()
	return c, err
}

// check refuses flags that cannot work.
func (c config) check() error {
	if len(c.args) > 0 {
		return fmt.Errorf("unexpected argument %q: the server takes flags only (see -h)", c.args[0])
	}
	switch c.upgradeMode {
	case modeFull, modeListeners, modeRolling:
	default:
		return fmt.Errorf("-upgrade-mode %q: want %s, %s or %s", c.upgradeMode, modeFull, modeRolling, modeListeners)
	}
	if c.drainTimeout <= 0 {
		return errors.New("-drain-timeout must be positive")
	}
	if c.h2Linger < 0 {
		return errors.New("-h2-linger must not be negative")
	}
	if c.parkTimeout < 0 {
		return errors.New("-park-timeout must not be negative")
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}
	if c.plain && (c.metrics != "" || c.control != "" || c.tlsCert != "") {
		return errors.New("-plain serves plain HTTP without the library: no -metrics, -control or -tls-cert")
	}
	return nil
}

// Run runs an httpd process to its end and returns its exit code.
func Run(args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // the flag package has said why
	}
	// The handoff library adds the pid to its own lines.
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log := base.With("pid", os.Getpid())
	if err := cfg.check(); err != nil {
		log.Error("refusing to start", "err", err)
		return 2
	}
	mode := cfg.upgradeMode
	if cfg.plain {
		mode = "plain"
	}
	defer profile(mode, log)()
	hs := newServer(log)
	if cfg.plain {
		return runPlain(cfg, hs, log)
	}
	p := &process{cfg: cfg, log: log, hs: hs}
	opts, err := p.options(base)
	if err == nil {
		err = handoff.Run(opts, handoff.Service{Setup: p.setup, Serve: p.serve, Shutdown: p.drain,
			DrainTimeout: cfg.drainTimeout + cfg.h2Linger, IdleAfterHandover: p.idle, Upgrade: p.upgrade})
	}
	if err != nil {
		log.Error("refusing to start", "err", err)
		return 1
	}
	return 0
}

// newServer is the http.Server of either mode, the library's or -plain's,
// before its handler is set.
func newServer(log *slog.Logger) *http.Server {
	return &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// process is one httpd process: its upgrader and its HTTP server.
type process struct {
	cfg       config
	up        *handoff.Upgrader
	hs        *http.Server
	ad        *httphandoff.Server // nil in listeners mode
	ts        *tlshandoff.Server  // with -tls-cert, but for listeners mode
	log       *slog.Logger
	idle      bool // after a handover, idle until stopped (peer.EnvAfterCommit)
	obs       *observer
	serveHTTP func() error // on the listener, once set up
	addr      net.Addr     // the listener's
}

// options are the upgrader's: the flags', then the environment's.
func (p *process) options(base *slog.Logger) (handoff.Options, error) {
	cfg := p.cfg
	opts := handoff.Options{
		Version:        cfg.version,
		PIDFile:        cfg.pidfile,
		UpgradeTimeout: cfg.upgradeTimeout,
		ParkTimeout:    cfg.parkTimeout,
		PauseTimeout:   peer.PauseTimeout(cfg.parkTimeout),
		Mode:           libraryMode(cfg.upgradeMode),
		Logger:         base,
		ControlSocket:  cfg.control,
	}
	if cfg.upgradeMode != modeListeners {
		p.ad = httphandoff.New(p.hs)
		p.ad.HTTP2Linger = cfg.h2Linger
		opts.Resume = p.ad.Resume
	}
	var err error
	p.idle, err = peer.FromEnv(&opts)
	if cfg.tlsCert != "" && p.ad != nil {
		moveTicketKeys(&opts, &p.ts)
	}
	return opts, err
}

// setup makes the listener and the metrics before Ready.
func (p *process) setup(up *handoff.Upgrader) error {
	p.up = up
	serve, addr, err := listen(p.cfg, up, p.hs, p.ad, &p.ts, p.log)
	if err != nil {
		return err
	}
	if p.obs, err = newObserver(up, p.cfg.metrics); err != nil {
		return err
	}
	p.obs.countHandshakes(p.ts, p.hs.TLSConfig) // hs.TLSConfig: listeners mode's, set by listen
	p.hs.Handler = newHandler(p.cfg.version, p.obs.count)
	p.serveHTTP, p.addr = serve, addr
	return nil
}

// serve serves HTTP and the metrics, once the process is ready.
func (p *process) serve() error {
	p.obs.Serve(p.log)
	p.log.Info("serving", "version", p.cfg.version, "addr", p.addr.String(), "upgraded", p.up.HasParent(),
		"upgrade_mode", p.cfg.upgradeMode, "tls", p.cfg.tlsCert != "")
	return p.serveHTTP()
}

// upgrade runs the upgrade a SIGHUP asks for. The library refuses one
// while another runs (ErrUpgradeInProgress), whoever started it: SIGHUP
// or handoffctl.
func (p *process) upgrade() {
	mode := p.cfg.upgradeMode
	start := time.Now()
	p.log.Info("upgrade starting", "mode", mode, "binary", p.up.Binary())
	err := p.up.Upgrade(context.Background())
	switch {
	case errors.Is(err, handoff.ErrUpgradeInProgress):
		p.log.Warn("upgrade refused: another upgrade is in progress", "mode", mode)
	case err != nil:
		p.log.Error("upgrade failed; this process carries on", "mode", mode, "err", err, "took", time.Since(start))
	default:
		p.log.Info("upgrade complete", "mode", mode, "took", time.Since(start))
	}
}

// drain stops accepting, lets the requests in flight finish until ctx
// ends (idle keep-alive connections are closed at once, busy ones after
// their reply), then closes what is left: at a stop, or after a handover
// what stayed here (listeners mode's connections, rolling mode's
// stragglers). In listeners mode the HTTP server is hs.Serve, whose
// connections stay here at a handover; otherwise it is the net/http
// adapter's, whose keep-alive connections move, each at its next idle
// moment.
func (p *process) drain(ctx context.Context) error {
	start := time.Now()
	conns := len(p.up.Conns())
	var err error
	if p.ad != nil {
		err = p.ad.Drain(ctx) // HTTP/2 connections too: GOAWAY, their streams finish
	} else if err = p.hs.Shutdown(ctx); err != nil {
		_ = p.hs.Close()
	}
	// Hijacked or otherwise untracked by net/http: the upgrader still lists them.
	left := p.up.Conns()
	for _, c := range left {
		_ = c.Close()
	}
	p.log.Info("drain done", "conns", conns, "timed_out", err != nil, "closed_after", len(left),
		"took", time.Since(start))
	if p.idle && p.up.Status().Phase == handoff.ProcessHandedOver {
		peer.Idle(p.log)
	}
	return nil
}

// libraryMode is the library's mode for an -upgrade-mode.
func libraryMode(mode string) handoff.Mode {
	switch mode {
	case modeListeners:
		return handoff.ListenersOnly
	case modeRolling:
		return handoff.Rolling
	}
	return handoff.AllAtOnce
}
