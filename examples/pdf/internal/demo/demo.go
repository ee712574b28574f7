package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
)

// Version labels: the binary BinDir/pdf-<label> answers VERSION <label>.x.y.
const (
	labelV1     = "v1"
	labelV2     = "v2"
	labelBroken = "broken" // brokenBinary; an upgrade to it must fail
)

// How a step asks for the upgrade: both ways an operator has.
const (
	viaSIGHUP = "SIGHUP"
	viaCtl    = "handoffctl" // handoffctl upgrade -socket, which says how it ended
)

// planStep is one upgrade of the scenario: deploy the binary labelled to,
// then ask for the upgrade via.
type planStep struct{ to, via string }

// plan is the scenario after the v1 start. The middle steps go through
// handoffctl, so that the demo shows the operator's path, including a
// rollback reported by an exit status; the outer ones keep SIGHUP.
var plan = []planStep{{labelV2, viaSIGHUP}, {labelV2, viaCtl}, {labelBroken, viaCtl}, {labelV1, viaSIGHUP}}

// servers is how many processes the plan runs, the first one included.
func servers() int {
	n := 1
	for _, ps := range plan {
		if ps.to != labelBroken {
			n++
		}
	}
	return n
}

// The demo's own account: charged under v1, so that STATS under v2 shows
// whether the charge counts crossed the migration.
const (
	demoAcct    = "demo-acct"
	wantStats   = "STATS 800 2"
	wantBalance = "BAL 800"
)

// demo is one run of the scenario.
type demo struct {
	cfg     Config
	out     io.Writer
	srv     *server
	witness *probe // one connection held across every step
	pid     int    // the serving process
	version string // its label
	res     Result
}

// Run runs the scenario described in the package doc, printing progress
// and then a summary to out.
//
// A nil error with res.OK() true is a pass; with res.OK() false, some
// check failed and res says which. A non-nil error means the scenario
// could not be carried out (missing binaries, a server that never became
// ready, ctx ended); res then holds what was done and res.OK() is false.
// Either way no server process is left running.
func Run(ctx context.Context, cfg Config, out io.Writer) (res Result, err error) {
	if err := checkBinaries(cfg.BinDir); err != nil {
		return Result{Problems: []string{err.Error()}}, err
	}
	cfg, made, err := cfg.withDefaults(servers())
	if err != nil {
		return Result{Problems: []string{err.Error()}}, err
	}
	d := &demo{cfg: cfg, out: out, srv: newServer(cfg.Dir, cfg.Addr), version: labelV1}
	d.res = Result{Dir: cfg.Dir, Conns: cfg.Conns, Planned: len(plan), Settle: cfg.Settle}
	if err = d.run(ctx); err != nil {
		d.res.Problems = append(d.res.Problems, err.Error())
	}
	fmt.Fprint(out, d.res.Summary())
	if made && d.res.OK() {
		os.RemoveAll(cfg.Dir)
	}
	return d.res, err
}

func checkBinaries(dir string) error {
	if dir == "" {
		dir = DefaultBinDir
	}
	for _, label := range []string{labelV1, labelV2} {
		if _, err := os.Stat(filepath.Join(dir, "pdf-"+label)); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "handoffctl")); err != nil {
		return fmt.Errorf("demo: handoffctl is not in %s; the demo upgrades through it (make build builds it): %w", dir, err)
	}
	return nil
}

func (d *demo) run(ctx context.Context) error {
	defer d.stopServer()
	defer func() {
		if d.witness != nil {
			d.witness.close()
		}
	}()
	if err := d.start(ctx); err != nil {
		return err
	}
	l, err := startLoad(ctx, d.cfg)
	if err != nil {
		return err
	}
	d.logf("load running: %d persistent connections, %.0f requests/s, %.0f new connections/s; %v between upgrades",
		d.cfg.Conns, d.cfg.Rate, d.cfg.Churn, d.cfg.Settle)
	err = d.steps(ctx)
	if err == nil {
		d.finalCheck()
	}
	d.logf("stopping the load")
	d.res.Load = l.stop()
	return err
}

// start deploys v1, starts it and makes the charges v2 must count.
func (d *demo) start(ctx context.Context) error {
	if err := installVersion(d.srv.bin, d.cfg.BinDir, labelV1); err != nil {
		return err
	}
	pid, err := d.srv.start(ctx, d.cfg.StepTimeout)
	if err != nil {
		return err
	}
	d.pid = pid
	d.logf("server %s started: pid %d on %s, work dir %s", labelV1, pid, d.cfg.Addr, d.cfg.Dir)
	if d.witness, err = dialProbe(d.cfg.Addr, "demo-witness"); err != nil {
		return err
	}
	for _, r := range [][]string{
		{"OK 1000", "TOPUP", demoAcct, "1000"},
		{"OK 900", "CHARGE", demoAcct, "100"},
		{"OK 800", "CHARGE", demoAcct, "100"},
	} {
		if err := d.witness.expect(r[0], r[1], r[2:]...); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) stopServer() {
	if d.srv.Group == nil {
		return // never started
	}
	// After a step that went wrong the pid file may name a process d.pid
	// does not know.
	pid, err := d.srv.PID()
	if err != nil {
		pid = d.pid
	}
	d.res.StoppedCleanly = d.srv.stop(pid)
	d.logf("server stopped (pid %d, on SIGTERM: %v)", pid, d.res.StoppedCleanly)
}

// steps runs the plan, letting the load run Settle before, between and
// after the upgrades. A step that goes wrong ends the plan: the ones after
// it would test nothing.
func (d *demo) steps(ctx context.Context) error {
	if err := sleep(ctx, d.cfg.Settle); err != nil {
		return err
	}
	for _, ps := range plan {
		st, err := d.upgrade(ctx, ps)
		d.res.Steps = append(d.res.Steps, st)
		d.logf("upgrade %d: %s", len(d.res.Steps), st)
		if c := st.CountersLine(); c != "" {
			d.logf("upgrade %d: %s", len(d.res.Steps), c)
		}
		if err != nil || !st.OK() {
			return err
		}
		if d.version == labelV2 {
			d.checkStats()
		}
		if err := sleep(ctx, d.cfg.Settle); err != nil {
			return err
		}
	}
	return nil
}

// upgrade deploys the binary ps.to and asks for the upgrade ps.via. It
// returns an error only if the demo itself could not go on; what the
// server did wrong is in Step.Err.
func (d *demo) upgrade(ctx context.Context, ps planStep) (Step, error) {
	to := ps.to
	st := Step{From: d.version, To: to, Via: ps.via, WantFail: to == labelBroken, OldPID: d.pid}
	if err := installVersion(d.srv.bin, d.cfg.BinDir, to); err != nil {
		return st, err
	}
	var err error
	if ps.via == viaCtl {
		err = d.control(ctx, &st)
	} else {
		err = d.signal(ctx, &st)
	}
	if ctx.Err() != nil {
		return st, ctx.Err()
	}
	if err == nil {
		err = d.checkServing(st)
	}
	if err == nil && ps.via == viaCtl {
		// Scraped only now, when the old process is gone or the upgrade
		// has failed, so that the one serving answers.
		if st.After, err = scrape(ctx, d.srv.metricsAddr); err == nil {
			err = st.countersErr()
		}
	}
	if err != nil {
		st.Err = err.Error()
		return st, nil
	}
	if !st.WantFail {
		d.pid, d.version = st.NewPID, to
	}
	return st, nil
}

// signal sends SIGHUP and waits for the outcome the step expects: a new
// process and the old one gone, or the old one logging the failure.
func (d *demo) signal(ctx context.Context, st *Step) error {
	logFrom := d.srv.LogSize()
	start := time.Now()
	defer func() { st.Took = time.Since(start) }()
	if err := syscall.Kill(st.OldPID, syscall.SIGHUP); err != nil {
		return fmt.Errorf("SIGHUP pid %d: %w", st.OldPID, err)
	}
	if st.WantFail {
		st.NewPID = st.OldPID
		return d.srv.awaitFailure(ctx, st.OldPID, logFrom, d.cfg.StepTimeout)
	}
	var err error
	st.NewPID, err = d.srv.awaitHandover(ctx, st.OldPID, d.cfg.StepTimeout)
	return err
}

// control runs handoffctl upgrade on the control socket and waits for the
// outcome the step expects, as signal does; handoffctl's exit status must
// say the same: 0 for a commit, 1 for a rollback. st.Before is scraped
// just before.
func (d *demo) control(ctx context.Context, st *Step) error {
	var err error
	if st.Before, err = scrape(ctx, d.srv.metricsAddr); err != nil {
		return err
	}
	logFrom := d.srv.LogSize()
	start := time.Now()
	defer func() { st.Took = time.Since(start) }()
	st.CtlOutput, st.CtlExit, err = d.handoffctl(ctx, "upgrade", "-socket", d.srv.control)
	for _, line := range st.CtlOutput {
		d.logf("  [handoffctl] %s", line)
	}
	if err != nil {
		return err
	}
	d.logf("  [handoffctl] exit status %d", st.CtlExit)
	if st.WantFail {
		st.NewPID = st.OldPID
		if st.CtlExit != 1 {
			return fmt.Errorf("handoffctl upgrade to a broken binary: exit status %d, want 1", st.CtlExit)
		}
		return d.srv.awaitFailure(ctx, st.OldPID, logFrom, d.cfg.StepTimeout)
	}
	if st.CtlExit != 0 {
		return fmt.Errorf("handoffctl upgrade: exit status %d, want 0", st.CtlExit)
	}
	st.NewPID, err = d.srv.awaitHandover(ctx, st.OldPID, d.cfg.StepTimeout)
	return err
}

// handoffctl runs BinDir/handoffctl with args, bounded by StepTimeout,
// and returns its output lines (stdout and stderr as they came) and exit
// status. err is set only if it could not run or did not exit by itself.
func (d *demo) handoffctl(ctx context.Context, args ...string) (lines []string, status int, err error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StepTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(d.cfg.BinDir, "handoffctl"), args...).CombinedOutput()
	for line := range strings.Lines(string(out)) {
		lines = append(lines, strings.TrimRight(line, "\n"))
	}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return lines, -1, fmt.Errorf("handoffctl %s: %w", args[0], ctx.Err())
	case errors.As(err, &exit):
		return lines, exit.ExitCode(), nil
	case err != nil:
		return lines, -1, fmt.Errorf("handoffctl %s: %w", args[0], err)
	}
	return lines, 0, nil
}

// checkServing asks, on the connection held since the start, who serves
// it now: the new process, or after a failed step still the old one.
func (d *demo) checkServing(st Step) error {
	want := st.To
	if st.WantFail {
		want = st.From
		if pid, err := d.srv.PID(); err != nil || pid != st.OldPID || !proc.Alive(st.OldPID) {
			return fmt.Errorf("after the failure pid %d is not the one serving (pid file: %d, %v; alive: %v)",
				st.OldPID, pid, err, proc.Alive(st.OldPID))
		}
	}
	ver, pid, err := d.witness.version()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(ver, want+".") || pid != st.NewPID {
		return fmt.Errorf("held connection served by %s pid %d, want %s pid %d", ver, pid, want, st.NewPID)
	}
	return nil
}

// checkStats asks on a fresh connection whether v2 counts the charges
// made under v1.
func (d *demo) checkStats() {
	d.res.StatsChecks++
	err := d.fresh("demo-stats", func(p *probe) error {
		return p.expect(wantStats, "STATS", demoAcct)
	})
	if err != nil {
		d.res.StatsWrong++
		d.res.Problems = append(d.res.Problems, err.Error())
	}
}

// finalCheck asks on a fresh connection which version serves at the end,
// and whether the balance came back from v2 intact.
func (d *demo) finalCheck() {
	err := d.fresh("demo-final", func(p *probe) error {
		var err error
		if d.res.FinalVersion, _, err = p.version(); err != nil {
			return err
		}
		return p.expect(wantBalance, "BALANCE", demoAcct)
	})
	if err != nil {
		d.res.Problems = append(d.res.Problems, err.Error())
	}
}

func (d *demo) fresh(gw string, f func(*probe) error) error {
	p, err := dialProbe(d.cfg.Addr, gw)
	if err != nil {
		return err
	}
	defer p.close()
	return f(p)
}

func (d *demo) logf(format string, args ...any) {
	fmt.Fprintf(d.out, "pdfdemo: "+format+"\n", args...)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
