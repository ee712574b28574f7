package httphandoff

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// h2loadResult is h2load's summary line: "requests: N total, N started,
// N done, N succeeded, N failed, N errored, N timeout".
type h2loadResult struct {
	total, started, done, succeeded, failed, errored, timeout int
	out                                                       string
}

var h2loadRequests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)

func parseH2load(t *testing.T, out string) h2loadResult {
	t.Helper()
	m := h2loadRequests.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("h2load printed no requests line:\n%s", out)
	}
	n := make([]int, len(m)-1)
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	return h2loadResult{n[0], n[1], n[2], n[3], n[4], n[5], n[6], out}
}

// h2load runs h2load in the background over HTTP/2 on c connections
// with up to 4 streams each, for total requests of GET /batch in batches
// of per (batchHandler), logging each request to log.
type h2loadRun struct {
	cmd  *exec.Cmd
	out  strings.Builder
	done chan error
}

func startH2load(t *testing.T, h *chain, total, per int, log string) *h2loadRun {
	t.Helper()
	bin := needTool(t, "h2load")
	url := fmt.Sprintf("https://%s/batch?per=%d", h.addr, per)
	r := &h2loadRun{done: make(chan error, 1)}
	r.cmd = exec.Command(bin, "-n", strconv.Itoa(total), "-c", "2", "-m", "4", "--log-file", log, url)
	r.cmd.Stdout = &r.out
	r.cmd.Stderr = &r.out
	t.Logf("%s", strings.Join(r.cmd.Args, " "))
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill(); <-r.done })
	go func() { r.done <- r.cmd.Wait() }()
	return r
}

func (r *h2loadRun) wait(t *testing.T) h2loadResult {
	t.Helper()
	err := <-r.done
	r.done <- err // for Cleanup
	res := parseH2load(t, r.out.String())
	if err != nil {
		t.Fatalf("h2load: %v\n%s", err, r.out.String())
	}
	return res
}

// allow lets batch b of GET /batch be answered.
func (h *chain) allow(b int) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, "batch-"+strconv.Itoa(b)), nil, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// endedAfter counts the requests in h2load's log (start in µs since the
// epoch, status, duration in µs) answered 200 that ended after t0.
func endedAfter(t *testing.T, log string, t0 time.Time) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		start, _ := strconv.ParseInt(f[0], 10, 64)
		dur, _ := strconv.ParseInt(f[2], 10, 64)
		if f[1] == "200" && time.UnixMicro(start+dur).After(t0) {
			n++
		}
	}
	return n
}

// TestH2LoadAcrossUpgrades: h2load, which never reconnects an HTTP/2
// connection, keeps its two connections across 10 upgrades with
// HTTP2Linger set: the old process goes on serving them after each
// commit. Each batch of requests is let through only after the upgrade
// before it (those of the next batch are in flight, held, during the
// upgrade), so requests complete after every upgrade, a whole batch after
// the last one; h2load reports every request succeeded, none failed,
// errored or timed out. Once h2load closes its connections, every old
// process exits.
func TestH2LoadAcrossUpgrades(t *testing.T) {
	const upgrades, per = 10, 100
	h, _, _ := startTLSChain(t, envLinger+"=10m")
	first := h.pid
	log := filepath.Join(h.dir, "h2load.log")
	h.allow(0)
	run := startH2load(t, h, per*(upgrades+1), per, log)
	var last time.Time
	for i := range upgrades {
		ev := h.await("batch")
		if ev[1] != strconv.Itoa(first) || ev[2] != strconv.Itoa(i) {
			t.Fatalf("upgrade %d: %q, want batch %d answered by the first process %d", i, ev, i, first)
		}
		h.hup()
		h.pid, _ = strconv.Atoi(h.await("ready")[1])
		last = time.Now()
		h.allow(i + 1)
	}
	res := run.wait(t)
	t.Logf("%s", res.out)
	if res.succeeded != res.total || res.failed != 0 || res.errored != 0 || res.timeout != 0 {
		t.Fatalf("h2load: %d of %d succeeded, %d failed, %d errored, %d timed out", res.succeeded, res.total, res.failed, res.errored, res.timeout)
	}
	if n := endedAfter(t, log, last); n < per {
		t.Fatalf("%d requests ended after the last upgrade, want at least %d", n, per)
	}
	for range upgrades {
		h.await("exit")
	}
}

// TestH2LoadGoAway pins h2load's behaviour that HTTP2Linger answers,
// with the default (GOAWAY at the commit): every stream h2load had sent
// is answered (the two-step GOAWAY refuses none of them, even one in
// flight from the client), but h2load opens no new connection after
// GOAWAY and counts every request it had not yet sent as failed. (Its
// source says the same: only its HTTP/1 session asks for a new
// connection, Client::try_new_connection.)
func TestH2LoadGoAway(t *testing.T) {
	const per = 100
	h, _, _ := startTLSChain(t)
	h.allow(0)
	run := startH2load(t, h, per*3, per, filepath.Join(h.dir, "h2load.log"))
	h.await("batch")
	h.hup()
	h.pid, _ = strconv.Atoi(h.await("ready")[1])
	h.allow(1) // the streams held in flight across the upgrade
	res := run.wait(t)
	t.Logf("%s", res.out)
	if res.started != res.succeeded || res.timeout != 0 {
		t.Fatalf("h2load: %d started, %d succeeded, %d timed out: a stream it sent was not answered", res.started, res.succeeded, res.timeout)
	}
	// h2load counts the requests it could not submit after GOAWAY as
	// failed and errored ("Process Request Failure").
	if unsent := res.total - res.started; unsent == 0 || res.failed != unsent || res.errored != unsent {
		t.Fatalf("h2load: %d of %d started, %d failed, %d errored: want the unsent ones failed (no reconnect)", res.started, res.total, res.failed, res.errored)
	}
	h.await("exit")
}
