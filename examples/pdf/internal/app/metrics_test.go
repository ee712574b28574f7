package app

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
	"github.com/handoff-dev/handoff/internal/testtool"
	"github.com/handoff-dev/handoff/metrics"
)

// startWithMetrics deploys the pdf binary in a fresh directory and starts
// it in full mode with -metrics on a free port, ready to scrape.
func startWithMetrics(t *testing.T) (dir string, p *pdf, web *scraper) {
	t.Helper()
	dir = t.TempDir()
	bin := deploy(t, dir, "")
	maddr := testtool.FreeAddr(t)
	p = launchBin(t, dir, bin, "-upgrade-mode", modeFull, "-metrics", maddr)
	p.logs.await(t, 0, "serving", p.pid)
	return dir, p, newScraper(maddr)
}

// TestMetricsAcrossUpgrades: the request counters and the chain's upgrade
// counts continue from process to process, through a rollback and two
// committed upgrades, as scraped from whichever process serves.
func TestMetricsAcrossUpgrades(t *testing.T) {
	dir, p, web := startWithMetrics(t)

	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	c.Ask(t, "CHARGE 2 alice 30", "OK 2 70")
	c.Ask(t, "BALANCE 3 alice", "BAL 3 70")
	m := web.metrics(t, p.pid)
	expectSeries(t, m, `pdf_requests_total{command="TOPUP"}`, 1)
	expectSeries(t, m, `pdf_requests_total{command="BALANCE"}`, 1)
	expectSeries(t, m, `handoff_upgrades_total{result="committed"}`, 0)
	expectSeries(t, m, `handoff_info{version="v1.0.0"}`, 1)
	web.expectReady(t, p.pid)

	// A new binary that exits at once: the upgrade rolls back.
	deploy(t, dir, "#!/bin/sh\nexit 3\n")
	mark := p.logs.len()
	hup(t, p.pid)
	p.logs.await(t, mark, "upgrade failed; this process carries on", p.pid)
	m = web.metrics(t, p.pid)
	expectSeries(t, m, `handoff_upgrades_total{result="rolled_back"}`, 1)
	expectSeries(t, m, `handoff_upgrades_total{result="committed"}`, 0)
	expectSeries(t, m, `handoff_upgrade_phase_seconds_count{phase="connected"}`, 0)
	web.expectReady(t, p.pid)
	c.Ask(t, "TOPUP 4 alice 5", "OK 4 75")
	before := web.metrics(t, p.pid)[`pdf_requests_total{command="TOPUP"}`]

	// Two good upgrades; the connection is handed over both times.
	deploy(t, dir, "")
	pid := p.pid
	for gen := 1; gen <= 2; gen++ {
		pid = upgradeOnce(t, p, pid)
		m = web.metrics(t, pid)
		if got := m[`pdf_requests_total{command="TOPUP"}`]; got < before {
			t.Errorf("generation %d: pdf_requests_total{TOPUP} = %v, was %v before", gen, got, before)
		}
		expectSeries(t, m, `handoff_upgrades_total{result="committed"}`, float64(gen))
		expectSeries(t, m, `handoff_upgrades_total{result="rolled_back"}`, 1)
		expectSeries(t, m, `handoff_generation`, float64(gen))
		expectSeries(t, m, `handoff_connections_handed_over_total`, float64(gen))
		expectSeries(t, m, `handoff_serving`, 1)
		// Every phase of every committed upgrade, those timed after the
		// carried values were read too (COMMIT brings them).
		expectSeries(t, m, `handoff_upgrade_phase_seconds_count{phase="connected"}`, float64(gen))
		expectSeries(t, m, `handoff_upgrade_phase_seconds_count{phase="parked"}`, float64(gen))
		expectSeries(t, m, `handoff_upgrade_phase_seconds_count{phase="pause"}`, float64(gen))
		expectSeries(t, m, `handoff_upgrade_phase_seconds_count{phase="commit"}`, float64(gen))
		web.expectReady(t, pid)
		c.Ask(t, fmt.Sprintf("TOPUP %d alice 1", 10+gen), fmt.Sprintf("OK %d %d", 10+gen, 75+gen))
		before = web.metrics(t, pid)[`pdf_requests_total{command="TOPUP"}`]
		if want := float64(2 + gen); before != want {
			t.Errorf("generation %d: pdf_requests_total{TOPUP} = %v, want %v", gen, before, want)
		}
	}
	p.stop(t, pid)
}

// TestReadyDuringUpgrade: /ready says 503 "upgrading" while an upgrade
// runs, 200 from the same process after it rolled back, and 200 from the
// new process after one committed. The upgrade is held open by a new
// binary that waits for the test's word on a FIFO, so the scrape in the
// middle of it depends on no timing.
func TestReadyDuringUpgrade(t *testing.T) {
	dir, p, web := startWithMetrics(t)
	web.expectReady(t, p.pid)

	g := newGate(t, dir)
	deploy(t, dir, "#!/bin/sh\n"+g.wait+"\nexit 3\n")
	mark := p.logs.len()
	hup(t, p.pid)
	started := p.logs.await(t, mark, "handoff: upgrade phase", p.pid)
	if field(started, "phase") != "started" {
		t.Fatalf("first phase logged: %q", started)
	}
	code, body, pid := web.get(t, "/ready")
	if code != http.StatusServiceUnavailable || body != "upgrading" || pid != p.pid {
		t.Fatalf("/ready during an upgrade: %d %q from pid %d, want 503 \"upgrading\" from %d", code, body, pid, p.pid)
	}
	if code, _, _ := web.get(t, "/alive"); code != http.StatusOK {
		t.Errorf("/alive during an upgrade: %d", code)
	}
	expectSeries(t, web.metrics(t, p.pid), "handoff_serving", 0)

	// The new binary reads, exits 3, and the upgrade rolls back.
	g.open(t)
	p.logs.await(t, mark, "upgrade failed; this process carries on", p.pid)
	web.expectReady(t, p.pid)
	m := web.metrics(t, p.pid)
	expectSeries(t, m, `handoff_rollbacks_total{cause="exited"}`, 1)
	expectSeries(t, m, "handoff_serving", 1)

	deploy(t, dir, "")
	next := upgradeOnce(t, p, p.pid)
	web.expectReady(t, next)
	expectSeries(t, web.metrics(t, next), `handoff_rollbacks_total{cause="exited"}`, 1)
	p.stop(t, next)
}

// deploy puts a new binary at dir/pdf: the test binary (as a symlink) if
// script is empty, else script. It returns the path.
func deploy(t *testing.T, dir, script string) string {
	t.Helper()
	bin, tmp := filepath.Join(dir, "pdf"), filepath.Join(dir, "pdf.new")
	os.Remove(tmp)
	var err error
	if script == "" {
		err = os.Symlink(os.Args[0], tmp)
	} else {
		err = os.WriteFile(tmp, []byte(script), 0o755)
	}
	if err == nil {
		err = os.Rename(tmp, bin)
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func hup(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// upgradeOnce upgrades the process old and returns its successor's pid.
func upgradeOnce(t *testing.T, p *pdf, old int) int {
	t.Helper()
	mark := p.logs.len()
	hup(t, old)
	p.logs.await(t, mark, "upgrade complete", old)
	serving := p.logs.await(t, mark, "serving", -old)
	pid, _ := strconv.Atoi(field(serving, "pid"))
	if pid == 0 || pid == old {
		t.Fatalf("serving after the upgrade: %q", serving)
	}
	return pid
}

// scraper talks to a -metrics address, one connection per request, so
// that each request reaches whichever process accepts now.
type scraper struct {
	base   string
	client *http.Client
}

func newScraper(addr string) *scraper {
	return &scraper{base: "http://" + addr,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
}

// get returns the status, the trimmed body and the answering pid.
func (s *scraper) get(t *testing.T, path string) (int, string, int) {
	t.Helper()
	resp, err := s.client.Get(s.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	pid, _ := strconv.Atoi(resp.Header.Get(metrics.PIDHeader))
	return resp.StatusCode, strings.TrimSpace(string(b)), pid
}

// fromPID repeats GET path until process pid answers it: after a commit,
// the old process may still answer on a connection it accepted before.
// Bounded by a safety net, never timed.
func (s *scraper) fromPID(t *testing.T, path string, pid int) (int, string) {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); {
		code, body, got := s.get(t, path)
		if got == pid {
			return code, body
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("GET %s: never answered by pid %d", path, pid)
	return 0, ""
}

func (s *scraper) expectReady(t *testing.T, pid int) {
	t.Helper()
	if code, body := s.fromPID(t, "/ready", pid); code != http.StatusOK || body != "ready" {
		t.Fatalf("/ready from pid %d: %d %q", pid, code, body)
	}
	if code, body := s.fromPID(t, "/alive", pid); code != http.StatusOK || body != "alive" {
		t.Fatalf("/alive from pid %d: %d %q", pid, code, body)
	}
}

// metrics scrapes /metrics from pid into series → value, series spelled as
// in the text exposition.
func (s *scraper) metrics(t *testing.T, pid int) map[string]float64 {
	t.Helper()
	code, body := s.fromPID(t, "/metrics", pid)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics line %q", line)
		}
		m[line[:i]] = v
	}
	return m
}

func expectSeries(t *testing.T, m map[string]float64, series string, want float64) {
	t.Helper()
	got, ok := m[series]
	if !ok {
		t.Errorf("%s: missing", series)
	} else if got != want {
		t.Errorf("%s = %v, want %v", series, got, want)
	}
}
