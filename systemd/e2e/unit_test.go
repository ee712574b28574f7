//go:build e2esystemd

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

const service = "pdf.service"

// Watching a unit.
const (
	watchEvery = 20 * time.Millisecond
	// watchAfter is how long a reload is watched after systemctl returns:
	// a service that dies once the reload is done dies there.
	watchAfter = time.Second
	// settle is how long the load runs before, between and after steps.
	settle = 2 * time.Second
	// unitTimeout bounds waiting for a unit to reach a state.
	unitTimeout = 30 * time.Second
)

// unitState is what systemctl show says of a unit.
type unitState struct {
	Active, Sub string
	MainPID     int
	NRestarts   int
	StatusText  string
}

func (s unitState) String() string {
	return fmt.Sprintf("%s/%s MainPID=%d NRestarts=%d", s.Active, s.Sub, s.MainPID, s.NRestarts)
}

// state asks systemd for unit's state; err only if systemctl failed.
func (c *container) state(unit string) (unitState, error) {
	out, status, err := c.exec("systemctl", "show", "-p", "ActiveState,SubState,MainPID,NRestarts,StatusText", unit)
	if err == nil && status != 0 {
		err = fmt.Errorf("systemctl show %s: exit status %d: %s", unit, status, out)
	}
	if err != nil {
		return unitState{}, err
	}
	var s unitState
	for line := range strings.Lines(out) {
		k, v, _ := strings.Cut(strings.TrimRight(line, "\n"), "=")
		switch k {
		case "ActiveState":
			s.Active = v
		case "SubState":
			s.Sub = v
		case "MainPID":
			s.MainPID, _ = strconv.Atoi(v)
		case "NRestarts":
			s.NRestarts, _ = strconv.Atoi(v)
		case "StatusText":
			s.StatusText = v
		}
	}
	return s, nil
}

func (c *container) mustState(unit string) unitState {
	c.t.Helper()
	s, err := c.state(unit)
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// awaitState polls unit until ok says yes, and fails the test with the
// last state after unitTimeout.
func (c *container) awaitState(unit, what string, ok func(unitState) bool) unitState {
	c.t.Helper()
	deadline := time.Now().Add(unitTimeout)
	for {
		s := c.mustState(unit)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not %s within %v; last %v (StatusText %q)", unit, what, unitTimeout, s, s.StatusText)
		}
		time.Sleep(watchEvery)
	}
}

func running(s unitState) bool { return s.Active == "active" && s.Sub == "running" && s.MainPID != 0 }

// start starts pdf.service and waits until it runs and accepts.
func (c *container) start() unitState {
	c.t.Helper()
	begin := time.Now()
	c.must("systemctl", "start", service)
	s := c.awaitState(service, "running", running)
	for !accepts(addr) {
		if time.Since(begin) > unitTimeout {
			c.t.Fatalf("%s runs (%v) but %s accepts no connection after %v", service, s, addr, unitTimeout)
		}
		time.Sleep(watchEvery)
	}
	c.t.Logf("%s started in %v: %v", service, time.Since(begin).Round(time.Millisecond), s)
	return s
}

// sample is one look at the unit during a watch.
type sample struct {
	at time.Duration
	unitState
}

// watch polls unit every watchEvery until the returned stop is called,
// which returns every sample taken.
func (c *container) watch(unit string) (stop func() []sample) {
	var (
		mu      sync.Mutex
		samples []sample
		done    = make(chan struct{})
		wg      sync.WaitGroup
	)
	begin := time.Now()
	wg.Go(func() {
		t := time.NewTicker(watchEvery)
		defer t.Stop()
		for {
			s, err := c.state(unit)
			if err != nil {
				s = unitState{Active: "error: " + err.Error()}
			}
			mu.Lock()
			samples = append(samples, sample{time.Since(begin), s})
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() []sample {
		close(done)
		wg.Wait()
		return samples
	}
}

// timeline renders samples as the runs of equal states, with when each
// began and how many samples it had.
func timeline(samples []sample) string {
	var b strings.Builder
	for i := 0; i < len(samples); {
		j := i
		for j < len(samples) && samples[j].unitState == samples[i].unitState {
			j++
		}
		fmt.Fprintf(&b, "\n  +%v %v (%d samples)", samples[i].at.Round(time.Millisecond), samples[i].unitState, j-i)
		i = j
	}
	return b.String()
}

// Only these states are a service that never stopped serving during a
// reload.
var reloadStates = map[string]bool{"active/running": true, "reloading/reload": true}

// reload deploys release and runs systemctl reload under the watch,
// watching on for watchAfter. It returns the state before, systemctl's
// output and status, and the samples.
func (c *container) reload(release string) (before unitState, out string, status int, samples []sample) {
	c.t.Helper()
	before = c.mustState(service)
	if !running(before) {
		c.t.Fatalf("%s before the reload to %s: %v, want active/running", service, release, before)
	}
	c.deploy(release)
	stop := c.watch(service)
	begin := time.Now()
	out, status, err := c.exec("systemctl", "reload", service)
	took := time.Since(begin)
	time.Sleep(watchAfter)
	samples = stop()
	if err != nil {
		c.t.Fatalf("systemctl reload %s: %v\n%s", service, err, out)
	}
	c.t.Logf("systemctl reload (to %s): exit status %d in %v; states seen:%s", release, status,
		took.Round(time.Millisecond), timeline(samples))
	return before, out, status, samples
}

// requireNeverLeft fails unless every sample is a serving state, with the
// same NRestarts as before.
func (c *container) requireNeverLeft(what string, before unitState, samples []sample) {
	c.t.Helper()
	for _, s := range samples {
		if !reloadStates[s.Active+"/"+s.Sub] || s.NRestarts != before.NRestarts || s.MainPID == 0 {
			c.t.Fatalf("%s: %s left active/running or reloading/reload at +%v: %v (before: %v); states seen:%s",
				what, service, s.at.Round(time.Millisecond), s.unitState, before, timeline(samples))
		}
	}
	if last := samples[len(samples)-1]; !running(last.unitState) {
		c.t.Fatalf("%s: %s ended %v, want active/running; states seen:%s", what, service, last.unitState, timeline(samples))
	}
}

// upgrade reloads into release, which must commit: systemctl exits 0, the
// unit never leaves active, a new MainPID of that release serves the
// witness connection, and the old process exits.
func (c *container) upgrade(release string, witness *client) (newPID int) {
	c.t.Helper()
	what := "reload to " + release
	before, out, status, samples := c.reload(release)
	if status != 0 {
		c.t.Fatalf("%s: systemctl reload exit status %d, want 0:\n%s", what, status, out)
	}
	c.requireNeverLeft(what, before, samples)
	after := samples[len(samples)-1]
	if after.MainPID == before.MainPID {
		c.t.Fatalf("%s: MainPID still %d, want a new process", what, before.MainPID)
	}
	witness.requireServedBy(release, after.MainPID)
	c.awaitGone(before.MainPID)
	return after.MainPID
}

// awaitGone waits until pid (in the container) has exited.
func (c *container) awaitGone(pid int) {
	c.t.Helper()
	deadline := time.Now().Add(unitTimeout)
	for {
		_, status, err := c.exec("test", "-e", "/proc/"+strconv.Itoa(pid))
		if err != nil {
			c.t.Fatal(err)
		}
		if status != 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the old process %d still runs %v after the reload", pid, unitTimeout)
		}
		time.Sleep(watchEvery)
	}
}

// stopGracefully stops pdf.service and fails unless the stop was
// graceful: the unit ends inactive with Result=success, and pid, the last
// MainPID, saved the ledger on SIGTERM and was never sent SIGKILL (as
// systemd does at once to a main process it does not take for its child).
func (c *container) stopGracefully(pid int) {
	c.t.Helper()
	begin := time.Now()
	c.must("systemctl", "stop", service)
	out := c.must("systemctl", "show", "-p", "ActiveState,Result", service)
	if !strings.Contains(out, "ActiveState=inactive\n") || !strings.Contains(out, "Result=success\n") {
		c.t.Fatalf("after systemctl stop: %s says\n%s want ActiveState=inactive and Result=success", service, out)
	}
	c.requireSaved(pid)
	c.t.Logf("%s stopped gracefully in %v: pid %d saved the ledger", service, time.Since(begin).Round(time.Millisecond), pid)
}

// requireSaved fails unless pid saved the ledger when it was stopped,
// and systemd never sent SIGKILL (as it does at once to a main process it
// does not take for its child).
func (c *container) requireSaved(pid int) {
	c.t.Helper()
	journal := c.must("journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-u", service)
	saved := false
	for line := range strings.Lines(journal) {
		if strings.Contains(line, "with signal SIGKILL") {
			c.t.Fatalf("systemctl stop sent SIGKILL: %s", strings.TrimSpace(line))
		}
		saved = saved || strings.Contains(line, `msg="state saved"`) && containsField(line, "pid="+strconv.Itoa(pid))
	}
	if !saved {
		c.t.Fatalf("systemctl stop: MainPID %d logged no \"state saved\"; journal:\n%s", pid, tail(journal, 20))
	}
}

// containsField matches whole words, so that pid=12 does not match pid=123.
func containsField(line, field string) bool {
	for _, f := range strings.Fields(line) {
		if f == field {
			return true
		}
	}
	return false
}

// badJournal matches journal lines that say a unit failed or a process
// dumped core.
var badJournal = regexp.MustCompile(`Failed|(?i)core dump|dumped core`)

// requireCleanJournal fails if the journal of the pdf units this boot has
// a line saying something failed or dumped core.
func (c *container) requireCleanJournal() {
	c.t.Helper()
	out := c.must("journalctl", "-b", "--no-pager", "-u", service, "-u", "pdf.socket")
	var bad []string
	for line := range strings.Lines(out) {
		if badJournal.MatchString(line) {
			bad = append(bad, strings.TrimRight(line, "\n"))
		}
	}
	if len(bad) > 0 {
		c.t.Fatalf("journalctl -u %s -u pdf.socket has %d line(s) of failure:\n  %s", service, len(bad), strings.Join(bad, "\n  "))
	}
}
