// Package app is the process around a PDF server: flags, signals, the
// handoff upgrader, the upgrade modes (upgrade.go) and the state file that
// carries the ledger across a cold start (state.go). Both binaries are one
// call:
//
//	os.Exit(app.Run("v1.0.0", ledger.NewV1(), os.Args[1:]))
//
// examples/pdf/README.md says what every flag, signal and mode does.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/examples/internal/observe"
	"github.com/handoff-dev/handoff/examples/internal/peer"
	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/metrics"
	"github.com/handoff-dev/handoff/statefile"
	"github.com/handoff-dev/handoff/systemd"
)

// The upgrade modes, as -upgrade-mode names them, so that a benchmark can
// compare them on otherwise identical servers.
const (
	modeFull      = "full"      // listeners, connections and ledger, at once
	modeRolling   = "rolling"   // listeners and a snapshot, then each connection with what it changed
	modeListeners = "listeners" // listeners only; the ledger through -state
	modeRestart   = "restart"   // save -state, execute the binary again in place
)

// libraryModes maps the modes the library runs to its Mode; restart mode
// does not use the library's upgrades.
var libraryModes = map[string]handoff.Mode{
	modeFull: handoff.AllAtOnce, modeRolling: handoff.Rolling, modeListeners: handoff.ListenersOnly,
}

// config is what the flags say.
type config struct {
	listen, pidfile, state, control, metrics string
	stateReset, stateAcceptStale, fdstore    bool
	stateSchemas                             bool
	plain                                    bool // serve without the library (plain.go)
	precopy                                  bool // in full mode, the ledger's bulk moves before the pause
	upgradeMode                              string
	upgradeTimeout, drainTimeout, snapshot   time.Duration
	parkTimeout                              time.Duration
	fdstoreMax                               int
	args                                     []string // after the flags: there must be none
}

const usage = `Usage: %[1]s [flags]

%[1]s is the PDF charging server, the example application of the handoff
library: account balances in cents, served over TCP one line per request
(HELLO, TOPUP, CHARGE, BALANCE, WHOAMI, VERSION, and STATS from v2 on).
examples/pdf/README.md describes the protocol, the state file and the modes.

Signals:
  SIGHUP           upgrade to the binary now at this one's path, in the -upgrade-mode.
  SIGTERM, SIGINT  save the ledger to -state and exit 0; if the save fails, keep
                   serving and try again at the next SIGTERM. Once an upgrade has
                   committed, the successor owns the ledger and saves it instead.

` + peer.Usage + `
A cold start refuses a stale -state (FILE.running says the last server did
not save) unless -state-accept-stale, and a corrupt one unless -state-reset.

Exit status: 0 after a stop; 1 if it refused to start or failed; 2 for a usage error.

Flags:
`

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, filepath.Base(os.Args[0]))
		fs.PrintDefaults()
	}
	fs.StringVar(&c.listen, "listen", "127.0.0.1:7070", "`address` to serve on")
	fs.StringVar(&c.pidfile, "pidfile", "", "`file` to write the serving process's pid to")
	fs.StringVar(&c.state, "state", "", "`file` for the ledger across a cold start (and FILE.running beside it)")
	fs.BoolVar(&c.stateReset, "state-reset", false, "start with an empty ledger; a file at -state is moved aside")
	fs.BoolVar(&c.stateAcceptStale, "state-accept-stale", false,
		"serve -state although FILE.running says the last server did not save it")
	fs.DurationVar(&c.upgradeTimeout, "upgrade-timeout", 0, "bound on an upgrade (0: the library's default)")
	fs.DurationVar(&c.parkTimeout, "park-timeout", 0,
		"full mode: how long every connection may take to reach a request boundary and park, or the upgrade "+
			"rolls back (0: the library's default, "+handoff.DefaultParkTimeout.String()+")")
	fs.StringVar(&c.upgradeMode, "upgrade-mode", modeFull,
		"what SIGHUP does: `mode` full, rolling, listeners or restart (see README.md)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 5*time.Second,
		"in listeners mode, how long the old process serves its connections after an upgrade")
	fs.StringVar(&c.control, "control", "", "control socket `path` for handoffctl status and upgrade")
	fs.StringVar(&c.metrics, "metrics", "", "`address` to serve /metrics, /alive and /ready on")
	fs.DurationVar(&c.snapshot, "snapshot", 0,
		"write -state every `interval` while serving; a start after a crash serves the last one")
	fs.BoolVar(&c.fdstore, "fdstore", false,
		"under systemd, keep the listener and connections in the fd store across a crash; needs -snapshot")
	fs.BoolVar(&c.stateSchemas, "state-schemas", false,
		"print the application and the state schemas this binary reads, and exit (an old process asks before an upgrade)")
	fs.IntVar(&c.fdstoreMax, "fdstore-max", systemd.DefaultMaxKept, "with -fdstore, keep at most `n` connections")
	fs.BoolVar(&c.precopy, "precopy", true,
		"in full mode, send the ledger (v2) to the new process while serving, and in the pause only the accounts "+
			"changed since; false: all of it in the pause")
	fs.BoolVar(&c.plain, "plain", false,
		"serve the same protocol on plain net.Conns, without the handoff library: no upgrades (SIGHUP is ignored), "+
			"no -state, -metrics or -control; the baseline make bench-steady compares with")
	err := fs.Parse(args)
	c.args = fs.Args()
	return c, err
}

// check refuses flag combinations that cannot work.
func (c config) check() error {
	_, libraryMode := libraryModes[c.upgradeMode]
	switch {
	case len(c.args) > 0:
		return fmt.Errorf("unexpected argument %q: the server takes flags only (see -h)", c.args[0])
	case c.state == "" && (c.stateReset || c.stateAcceptStale):
		return errors.New("-state-reset and -state-accept-stale need -state")
	case c.stateReset && c.stateAcceptStale:
		return errors.New("-state-reset and -state-accept-stale exclude each other: start empty, or serve the stale file")
	case c.snapshot != 0 && (c.state == "" || c.snapshot < 0):
		return errors.New("-snapshot needs -state and a positive interval")
	case c.parkTimeout < 0:
		return errors.New("-park-timeout must not be negative")
	case c.plain && (c.state != "" || c.metrics != "" || c.control != "" || c.fdstore):
		return errors.New("-plain serves without the library: no -state, -metrics, -control or -fdstore")
	case c.fdstore && c.snapshot == 0:
		// A process that takes the connections back after a crash must
		// also find the ledger they were served from.
		return errors.New("-fdstore needs -snapshot")
	case !libraryMode && c.upgradeMode != modeRestart:
		return fmt.Errorf("-upgrade-mode %q: want full, rolling, listeners or restart", c.upgradeMode)
	case c.state == "" && (c.upgradeMode == modeListeners || c.upgradeMode == modeRestart):
		return fmt.Errorf("-upgrade-mode %s needs -state: the ledger reaches the next process only through that file", c.upgradeMode)
	}
	return nil
}

// Run runs a PDF server process to its end and returns its exit code (see
// usage). version answers VERSION; led is the empty ledger of that version.
func Run(version string, led server.Ledger, args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // the flag package has said why
	}
	if cfg.stateSchemas {
		printSchemas(os.Stdout)
		return 0
	}
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log := base.With("pid", os.Getpid()) // the library adds it to its own lines
	if err := cfg.check(); err != nil {
		log.Error("refusing to start", "err", err)
		return 2
	}
	if cfg.plain {
		return runPlain(cfg, version, server.New(version, led, log), log)
	}
	prof := newProfiler(log)
	prof.start("start")
	defer prof.stop()
	p := &process{cfg: cfg, version: version, state: stateFile{cfg.state}, srv: server.New(version, led, log),
		schema: led.Schema(), log: log, endSnapshots: func() {}, prof: prof}
	if cfg.upgradeMode == modeRolling {
		p.srv.RollingUpgrades()
	}
	opts := p.options(base)
	if p.idle, err = peer.FromEnv(&opts); err == nil {
		err = handoff.Run(opts, handoff.Service{Setup: p.setup, Serve: p.serve, Save: p.save,
			Shutdown: p.shutdown, DrainTimeout: cfg.drainTimeout, IdleAfterHandover: p.idle, Upgrade: p.upgrade})
	}
	p.endSnapshots()
	switch {
	case err != nil:
		p.unclaim()
		log.Error("refusing to start", "err", err)
		return 1
	case p.exitErr != nil:
		log.Error("exiting", "err", p.exitErr)
		return 1
	}
	return 0
}

// process is a server process from its start to its exit; handoff.Run
// drives its life.
type process struct {
	cfg          config
	version      string
	state        stateFile
	srv          *server.Server
	schema       uint32                    // the ledger's own, in ledger.States
	next         atomic.Pointer[schemaAsk] // what BeforeUpgrade asks, for SaveState
	precopyAs    atomic.Uint32             // the schema the pre-copy's bulk went in, for its changes
	up           *handoff.Upgrader
	ln           *handoff.Listener
	log          *slog.Logger
	idle         bool      // after a handover, idle until stopped (peer.EnvAfterCommit)
	serveMetrics func()    // after Ready
	endSnapshots func()    // may be called twice
	claimed      bool      // a cold start named this process in a marker that was not there
	exitErr      error     // the state is saved, but the exit status must say what failed
	prof         *profiler // nil unless PDF_PROFILE_DIR is set (profile.go)
}

// setup makes what the process serves before Ready: the ledger, the
// listeners, the snapshots, and in a cold start the marker.
func (p *process) setup(up *handoff.Upgrader) error {
	p.up = up
	if err := p.openState(); err != nil {
		return err
	}
	var err error
	if p.ln, err = up.Listen("tcp", p.cfg.listen); err != nil {
		return err
	}
	if p.serveMetrics, err = listenMetrics(up, p.cfg.metrics, p.srv, p.log); err != nil {
		return err
	}
	if !up.HasParent() {
		// It owns the ledger it has just read: the marker says so from
		// now on, and a start that cannot write it refuses.
		if err := p.claimCold(); err != nil {
			return err
		}
	}
	p.endSnapshots = p.snapshots()
	return nil
}

// serve serves once the process is ready; a new process owns the ledger
// from here on (the old one did until the commit).
func (p *process) serve() error {
	p.serveMetrics()
	if p.up.HasParent() {
		p.claimUpgraded()
		p.prof.untilParentExits(30 * time.Second)
	} else {
		p.prof.stop()
	}
	p.log.Info("serving", "version", p.version, "addr", p.ln.Addr().String(), "upgraded", p.up.HasParent(),
		"upgrade_mode", p.cfg.upgradeMode)
	logRestarted(p.log)
	return p.srv.Serve(p.ln)
}

// options are the upgrader's options for cfg, before the environment's.
func (p *process) options(base *slog.Logger) handoff.Options {
	cfg, srv := p.cfg, p.srv
	return handoff.Options{
		App:            "pdf", // pdf-v1 and pdf-v2 are two main packages of one application
		Version:        p.version,
		PIDFile:        cfg.pidfile,
		UpgradeTimeout: cfg.upgradeTimeout,
		ParkTimeout:    cfg.parkTimeout,
		PauseTimeout:   peer.PauseTimeout(cfg.parkTimeout),
		SaveState:      p.sendState,
		LoadState:      srv.LoadState,
		Precopy:        p.precopy(),
		Resume:         srv.Resume,
		BeforeUpgrade:  p.beforeUpgrade,
		Mode:           libraryModes[cfg.upgradeMode],
		// A connection that cannot move (its handler is stuck writing to a
		// client that does not read) cannot carry its accounts either:
		// served on here, it would change a ledger nobody reads again.
		Stragglers:    handoff.CloseStragglers,
		Logger:        base,
		ControlSocket: cfg.control,
		Supervisor:    systemd.New(systemd.Options{KeepSockets: cfg.fdstore, MaxKept: cfg.fdstoreMax, Logger: base}),
	}
}

// openState loads the ledger from -state as this start must. A process
// upgraded in full or rolling mode gets the ledger from its parent; in
// the other modes the old process has just written the file, and nothing
// else will do. -state-reset and -state-accept-stale were for a cold
// start, not for the new process of an upgrade or the image a restart
// executes, which have the same flags.
func (p *process) openState() error {
	st := p.state
	if st.path == "" {
		return nil
	}
	if err := st.probe(); err != nil {
		return err
	}
	if p.up.HasParent() {
		if p.cfg.upgradeMode == modeFull || p.cfg.upgradeMode == modeRolling {
			return nil
		}
		if err := statefile.ReadFile(st.path, p.srv.LoadState); err != nil {
			return err
		}
		p.log.Info("state restored", "path", st.path)
		return nil
	}
	opts := coldStart{reset: p.cfg.stateReset, acceptStale: p.cfg.stateAcceptStale, snapshots: p.cfg.snapshot > 0}
	if os.Getenv(envRestartedAt) != "" {
		opts = coldStart{}
	}
	return st.openCold(p.srv, opts, p.log)
}

// claimCold names this process in the marker in a cold start, remembering
// whether one was there, for unclaim.
func (p *process) claimCold() error {
	if p.state.path == "" {
		return nil
	}
	_, err := os.Lstat(p.state.markerPath())
	if err := p.state.claim(p.version); err != nil {
		return fmt.Errorf("state file %s: %w", p.state.path, err)
	}
	p.claimed = errors.Is(err, fs.ErrNotExist)
	return nil
}

// unclaim removes the marker a cold start wrote if the process did not
// serve after all (its Ready failed): the ledger on disk is current.
func (p *process) unclaim() {
	if p.claimed {
		_ = statefile.Remove(p.state.markerPath())
	}
}

// claimUpgraded names a new process in the marker once it owns the ledger.
func (p *process) claimUpgraded() {
	if p.state.path == "" {
		return
	}
	if err := p.state.claim(p.version); err != nil {
		// Too late to refuse: the old process has handed over. Its marker
		// stays, which is all a cold start needs.
		p.log.Error("marker not rewritten; it still names the old process", "err", err)
	}
}

// shutdown ends what is left of a process that has handed over: in
// listeners mode its connections, drained; with idle, its snapshots, as
// it idles. At a stop there is nothing to end: Run closes the
// connections once the ledger is saved.
func (p *process) shutdown(ctx context.Context) error {
	if p.up.Status().Phase != handoff.ProcessHandedOver {
		return nil
	}
	if p.cfg.upgradeMode == modeListeners {
		p.drain(ctx)
	} else if !p.idle {
		// The successor owns the connections that moved; Run closes only
		// those that stayed.
		p.log.Info("handed over; exiting")
	}
	if p.idle {
		// No snapshot from now on: the ledger here is stale, and the
		// successor writes the same file (a shared volume in a pod).
		p.endSnapshots()
		peer.Idle(p.log)
	}
	return nil
}

// listenMetrics counts srv's requests, continued across upgrades, and with
// addr set listens for /metrics, /alive and /ready there (a listener
// inherited across upgrades). Call the serve it returns after Ready:
// before it, a new process would share the listener with the old one.
// The server ends when the upgrader closes the listener at a handover.
func listenMetrics(up *handoff.Upgrader, addr string, srv *server.Server, log *slog.Logger) (serve func(), err error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pdf_requests_total",
		Help: "Requests answered by the chain of pdf processes, by command.",
	}, []string{"command"})
	// Every command, and INVALID for a line that does not parse.
	for _, cmd := range []string{"HELLO", "TOPUP", "CHARGE", "BALANCE", "WHOAMI", "VERSION", "STATS", "INVALID"} {
		metrics.ContinueVec(up, "pdf_requests_total", requests, cmd)
	}
	srv.CountRequests(func(cmd string) { requests.WithLabelValues(cmd).Inc() })
	obs, err := observe.Listen(up, addr, requests)
	if err != nil {
		return nil, err
	}
	return func() { obs.Serve(log) }, nil
}
