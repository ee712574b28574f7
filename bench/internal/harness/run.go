// Package harness runs the upgrade benchmark: the pdf server under paced
// load from separate client processes, upgraded by SIGHUP a few times,
// every request recorded, and the records turned into a result.Run.
package harness

import (
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/bench/internal/load"
	"github.com/handoff-dev/handoff/bench/internal/result"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/internal/proc"
)

// Config is one run: a mode at a scale.
type Config struct {
	Self     string // this executable, started again as the client processes
	Server   string // the pdf server binary
	Mode     string
	Conns    int
	Rate     float64 // requests per second, all clients together
	Churn    float64 // new connections per second, all clients together
	Duration time.Duration
	Upgrades int
	Accounts int    // accounts the ledger holds before the clients start (seed.go)
	Dir      string // work directory
}

// perClient bounds one client process's connections, well under the
// 20000 fds a process may hold here.
const perClient = 5000

// Run runs one mode at one scale.
func Run(cfg Config, logf func(string, ...any)) (result.Run, error) {
	out := result.Run{Mode: cfg.Mode, Conns: cfg.Conns, Accounts: cfg.Accounts}
	srv, err := startServer(cfg.Dir, cfg.Server, cfg.Mode)
	if err != nil {
		return out, err
	}
	defer srv.kill()
	if cfg.Accounts > 0 {
		start := time.Now()
		if err := seed(srv.addr, cfg.Accounts); err != nil {
			return out, err
		}
		logf("%s, %d conns: ledger seeded with %d accounts in %v", cfg.Mode, cfg.Conns, cfg.Accounts,
			time.Since(start).Round(time.Millisecond))
	}
	clients, err := startClients(cfg, srv.addr)
	if err != nil {
		return out, err
	}
	logf("%s, %d conns: %d client processes connected", cfg.Mode, cfg.Conns, len(clients))
	out.RSSBefore, out.FdsBefore = usage(srv.pid())
	epoch := time.Now()
	for _, c := range clients {
		c.start(epoch)
	}
	drive(cfg, srv, epoch, &out, logf)
	// Half a second before the end: once their schedule ends, the clients
	// close their connections.
	time.Sleep(time.Until(epoch.Add(cfg.Duration - 500*time.Millisecond)))
	out.RSSAfter, out.FdsAfter = usage(srv.pid())
	time.Sleep(time.Until(epoch.Add(cfg.Duration)))
	var recs []load.Record
	for _, c := range clients {
		t, r, err := c.wait()
		if err != nil {
			return out, err
		}
		addTotals(&out, t)
		recs = append(recs, r...)
	}
	summarise(&out, recs)
	return out, nil
}

// drive measures the server's CPU per request until the first upgrade is
// due, then sends the upgrades, evenly spaced over the run.
func drive(cfg Config, srv *server, epoch time.Time, out *result.Run, logf func(string, ...any)) {
	gap := cfg.Duration / time.Duration(cfg.Upgrades+1)
	cpu0 := proc.CPUTime(srv.pid())
	time.Sleep(time.Until(epoch.Add(gap)))
	// Before any upgrade (in a run without upgrades, over the same span):
	// what bounds how fast a backlog drains after a pause.
	out.ServerCPUPerReq = (proc.CPUTime(srv.pid()) - cpu0) / time.Duration(max(1, cfg.Rate*gap.Seconds()))
	for i := range sighups(cfg) {
		time.Sleep(time.Until(epoch.Add(time.Duration(i+1) * gap)))
		up := upgrade(srv, cfg.Mode, epoch)
		logf("  upgrade %d: ok %v, %v", i+1, up.OK, up.Duration.Round(time.Millisecond))
		out.Upgrades = append(out.Upgrades, up)
	}
}

// sighups is how many upgrades the run sends: none in ModeNone, which is
// the same load and server with the upgrades left out, nor in ModePlain.
func sighups(cfg Config) int {
	if cfg.Mode == result.ModeNone || cfg.Mode == result.ModePlain {
		return 0
	}
	return cfg.Upgrades
}

func startClients(cfg Config, addr string) ([]*client, error) {
	n := (cfg.Conns + perClient - 1) / perClient
	var clients []*client
	for i := range n {
		conns := cfg.Conns / n
		if i < cfg.Conns%n {
			conns++
		}
		c, err := startClient(cfg.Self, i, addr, conns, cfg.Rate/float64(n), cfg.Churn/float64(n),
			cfg.Duration, filepath.Join(cfg.Dir, fmt.Sprintf("client-%d.rec", i)))
		if err != nil {
			for _, c := range clients {
				c.cmd.Process.Kill()
			}
			return nil, err
		}
		clients = append(clients, c)
	}
	return clients, nil
}

// handedOver matches the old process's log line of a handoff, full or of
// the listeners alone, or of the end of a rolling move; phase matches its
// key=duration pairs, the phases as the library names them (release left
// out, and pause: the run's is the library's Pause of the others, see
// parkedAll). A rolling move logs only move
// (commit to the last connection moved) and max_wait (the longest a parked
// connection waited until the new process had taken it up). The new
// process logs a line of the same message, which says from= where the old
// one's says to=.
var (
	handedOver = regexp.MustCompile(`msg="handoff: (?:handed over[^"]*|rolling move done)" pid=\d+ to=(.*)`)
	// resumed matches the new process's resume phase; from= names the old.
	resumed = regexp.MustCompile(`phase=` + handoff.PhaseResume + ` from=(\d+) took=(\S+)`)
	phase   = regexp.MustCompile(` (` + strings.Join([]string{handoff.PhaseConnected, handoff.PhaseFds,
		handoff.PhasePrecopy, handoff.PhasePark, handoff.PhaseParked, handoff.PhaseState, handoff.PhaseReady, handoff.PhaseCommit,
		handoff.PhaseMove, "max_wait"}, "|") + `)=(\S+)`)
)

// upgrade sends SIGHUP and waits for the upgrade to end: the old process
// gone (full, rolling: every connection has moved; listeners: drained) or
// the process serving again (restart).
func upgrade(srv *server, mode string, epoch time.Time) result.Upgrade {
	old := srv.pid()
	serving := srv.servingCount()
	rssOld, _ := usage(old)
	t0 := time.Now()
	up := result.Upgrade{At: t0.Sub(epoch), RSSOld: rssOld}
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		return up
	}
	done := func() bool { return !proc.Alive(old) }
	if mode == result.ModeRestart {
		done = func() bool { return srv.servingCount() > serving }
	}
	up.OK = waitFor(60*time.Second, done) == nil
	up.Duration = time.Since(t0)
	if up.OK && mode != result.ModeRestart {
		up.RSSNew, _ = usage(srv.pid()) // the pid file names the new process once the old one is gone
	}
	if m := lastMatch(srv.log(), handedOver); m != nil {
		up.Phases = map[string]time.Duration{}
		for _, kv := range phase.FindAllStringSubmatch(m[1], -1) {
			up.Phases[kv[1]], _ = time.ParseDuration(kv[2])
		}
	}
	if _, parked := up.Phases[handoff.PhasePark]; parked && up.OK {
		if d, ok := resumeOf(srv, old); ok {
			up.Phases[handoff.PhaseResume] = d
		}
	}
	return up
}

// resumeOf waits for the resume phase of the process that took over from
// old: it may end after old has exited.
func resumeOf(srv *server, old int) (time.Duration, bool) {
	var d time.Duration
	found := func() bool {
		for _, m := range resumed.FindAllStringSubmatch(srv.log(), -1) {
			if m[1] == strconv.Itoa(old) {
				d, _ = time.ParseDuration(m[2])
				return true
			}
		}
		return false
	}
	return d, waitFor(30*time.Second, found) == nil
}

func lastMatch(s string, re *regexp.Regexp) []string {
	all := re.FindAllStringSubmatch(s, -1)
	if len(all) == 0 {
		return nil
	}
	return all[len(all)-1]
}

func addTotals(out *result.Run, t clientTotals) {
	out.ConnsDropped += t.Totals.DroppedConns
	out.Duplicated += uint64(t.Duplicated)
	out.Refused += uint64(t.Totals.ChurnRefused)
	out.Reset += uint64(t.Totals.ChurnReset)
}

// summarise turns the records into the run's figures.
func summarise(out *result.Run, recs []load.Record) {
	out.ConnsSurvived = out.Conns - out.ConnsDropped
	var in, outside []time.Duration
	buckets := map[int64][]time.Duration{}
	const bucket = int64(100 * time.Millisecond)
	for _, r := range recs {
		out.Requests++
		switch r.Outcome {
		case load.Lost:
			out.Lost++
			continue
		case load.Failed:
			out.Failed++
		}
		lat := time.Duration(r.Replied - r.Due)
		out.MaxStall = max(out.MaxStall, lat)
		if inWindow(out.Upgrades, r.Due) {
			in = append(in, lat)
		} else {
			outside = append(outside, lat)
		}
		buckets[r.Due/bucket] = append(buckets[r.Due/bucket], lat)
	}
	out.InWindow, out.OutWindow = summary(in), summary(outside)
	for _, k := range slices.Sorted(maps.Keys(buckets)) {
		l := summary(buckets[k])
		out.Timeline = append(out.Timeline, result.Point{At: time.Duration(k * bucket), Worst: l.Max, P99: l.P99})
	}
	for _, u := range out.Upgrades {
		if _, ok := u.Phases[handoff.PhasePark]; ok {
			out.Pause = max(out.Pause, parkedAll(u.Phases).Pause())
		}
		if r, ok := u.Phases[handoff.PhaseResume]; ok {
			out.PauseResumed = max(out.PauseResumed, parkedAll(u.Phases).Pause()+r)
		}
	}
}

// inWindow reports whether a request due at t was due during an upgrade
// (from its SIGHUP to its end, plus 100 ms for the replies to drain).
func inWindow(ups []result.Upgrade, t int64) bool {
	for _, u := range ups {
		if t >= int64(u.At) && t <= int64(u.At+u.Duration+100*time.Millisecond) {
			return true
		}
	}
	return false
}

func summary(l []time.Duration) result.Latency {
	if len(l) == 0 {
		return result.Latency{}
	}
	slices.Sort(l)
	q := func(p float64) time.Duration { return l[min(len(l)-1, int(p*float64(len(l))))] }
	return result.Latency{Count: uint64(len(l)), P50: q(0.5), P99: q(0.99), P999: q(0.999), Max: l[len(l)-1]}
}

// parkedAll is the upgrade whose old process logged phases p, one that
// parked every connection (it logged park), as the library's stats: their
// Pause says how long connections were not served.
func parkedAll(p map[string]time.Duration) handoff.UpgradeStats {
	return handoff.UpgradeStats{Mode: handoff.AllAtOnce, Connected: p[handoff.PhaseConnected],
		Fds: p[handoff.PhaseFds], Park: p[handoff.PhasePark], Parked: p[handoff.PhaseParked],
		State: p[handoff.PhaseState], Ready: p[handoff.PhaseReady], Commit: p[handoff.PhaseCommit]}
}
