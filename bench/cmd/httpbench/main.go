// Command httpbench compares HTTP servers upgraded under the same wrk load:
// bin/httpd upgraded by the handoff library (full and listeners modes),
// nginx reloaded and binary-upgraded, and HAProxy reloaded in master-worker
// mode. Each contender serves a static reply on loopback, alone, while
// wrk -t2 -c200 --latency runs keep-alive connections against it and an
// upgrade comes every 2 s. It reports wrk's socket errors, non-2xx replies,
// requests/s and latency percentiles, and whether each upgrade happened
// (the serving pids changed). make bench-http runs it; bench/README.md
// reads one run.
//
// It installs wrk, nginx and HAProxy with apt-get when one is missing
// (-install=false refuses instead), and needs to signal the servers it
// starts: run it as the user who can.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	bin := flag.String("bin", "bin", "`dir` holding httpd (make build)")
	out := flag.String("out", "bench/results/http.md", "markdown `file` to write the results to")
	duration := flag.Duration("duration", 22*time.Second, "wrk's run per contender")
	every := flag.Duration("every", 2*time.Second, "time between upgrades")
	upgrades := flag.Int("upgrades", 10, "upgrades per contender")
	conns := flag.Int("conns", 200, "wrk's connections")
	threads := flag.Int("threads", 2, "wrk's threads")
	only := flag.String("only", "", "comma-separated contender names to run (default: all)")
	install := flag.Bool("install", true, "apt-get install wrk, nginx and haproxy when missing")
	flag.Parse()
	log.SetFlags(log.Ltime)

	if err := ensureTools(*install); err != nil {
		log.Fatal(err)
	}
	// Processes whose parent exits (an httpd after its upgrade, nginx's new
	// master) become this process's children, so that they are reaped and
	// cleaned up here rather than by an init that may not reap.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Fatalf("prctl PR_SET_CHILD_SUBREAPER: %v", err)
	}
	all := []contender{
		httpdContender(*bin, "full"),
		httpdContender(*bin, "listeners"),
		nginxContender(false),
		nginxContender(true),
		haproxyContender(),
	}
	var rows []row
	started := time.Now()
	for i, c := range all {
		if *only != "" && !strings.Contains(","+*only+",", ","+c.name+",") {
			continue
		}
		p := plan{port: 7801 + i, duration: *duration, every: *every, upgrades: *upgrades, conns: *conns, threads: *threads}
		r := run(c, p)
		log.Printf("%s: %s", c.name, r.summary())
		rows = append(rows, r)
	}
	doc := report(rows, *conns, *threads, *duration, *every, *upgrades, time.Since(started))
	fmt.Print(doc)
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(*out, []byte(doc), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// ensureTools installs Debian's wrk, nginx and haproxy if one is missing.
func ensureTools(install bool) error {
	var missing []string
	for _, t := range []string{"/usr/bin/wrk", "/usr/sbin/nginx", "/usr/sbin/haproxy"} {
		if _, err := os.Stat(t); err != nil {
			missing = append(missing, filepath.Base(t))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !install {
		return fmt.Errorf("missing %s (apt-get install -y wrk nginx haproxy)", strings.Join(missing, ", "))
	}
	log.Printf("installing wrk nginx haproxy with apt-get (missing: %s)", strings.Join(missing, ", "))
	for _, args := range [][]string{{"update"}, {"install", "-y", "wrk", "nginx", "haproxy"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", args[0], err)
		}
	}
	return nil
}

// plan is one contender's load and upgrades.
type plan struct {
	port, upgrades, conns, threads int
	duration, every                time.Duration
}

// row is one contender's outcome.
type row struct {
	c         contender
	skipped   string // why it did not run, if it did not
	asked     int
	done      int
	failures  []string // why an upgrade was not seen to happen
	wrk       wrkResult
	leftovers []int // processes still running after cleanup
}

func (r row) summary() string {
	if r.skipped != "" {
		return "skipped: " + r.skipped
	}
	w := r.wrk
	return fmt.Sprintf("upgrades %d/%d, %.0f req/s, errors connect %d read %d write %d timeout %d, non-2xx %d, p99 %s",
		r.done, r.asked, w.reqPerSec, w.connect, w.read, w.write, w.timeout, w.non2xx, fmtDur(w.p99))
}

// run starts c, puts wrk on it, upgrades it every p.every and ends every
// process it started.
func run(c contender, p plan) (r row) {
	r.c = c
	dir, err := os.MkdirTemp("", "httpbench-")
	if err != nil {
		r.skipped = err.Error()
		return r
	}
	defer os.RemoveAll(dir)
	log.Printf("%s: starting in %s on 127.0.0.1:%d", c.name, dir, p.port)
	s, err := c.start(dir, p.port)
	if s != nil {
		defer func() { r.leftovers = cleanup(s) }()
	}
	if err != nil {
		r.skipped = err.Error()
		return r
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", p.port)
	var stdout bytes.Buffer
	wrk := exec.Command("wrk", fmt.Sprintf("-t%d", p.threads), fmt.Sprintf("-c%d", p.conns),
		fmt.Sprintf("-d%ds", int(p.duration.Seconds())), "--latency", url)
	wrk.Stdout, wrk.Stderr = &stdout, &stdout
	begin := time.Now()
	if err := wrk.Start(); err != nil {
		r.skipped = fmt.Sprintf("wrk: %v", err)
		return r
	}
	for i := 1; i <= p.upgrades; i++ {
		at := begin.Add(time.Duration(i) * p.every)
		if at.After(begin.Add(p.duration - time.Second)) {
			break // no upgrade in wrk's last second: it would not be measured
		}
		time.Sleep(time.Until(at))
		r.asked++
		ok, why := s.upgrade(p.every - 200*time.Millisecond)
		if ok {
			r.done++
		} else {
			r.failures = append(r.failures, fmt.Sprintf("upgrade %d: %s", i, why))
			log.Printf("%s: upgrade %d not seen: %s", c.name, i, why)
		}
	}
	if err := wrk.Wait(); err != nil {
		r.skipped = fmt.Sprintf("wrk: %v: %s", err, stdout.String())
		return r
	}
	r.wrk, err = parseWrk(stdout.String())
	if err != nil {
		r.skipped = fmt.Sprintf("%v: %s", err, stdout.String())
	}
	return r
}

// cleanup ends every process of the contender's group and reports those
// that survived.
func cleanup(s *server) []int {
	pid := s.cmd.Process.Pid
	left := killGroup(s.pgid, 15*time.Second, pid)
	select {
	case <-s.waited:
	case <-time.After(5 * time.Second):
		left = append(left, pid)
	}
	reapOrphans(0)
	return left
}

// report is the markdown document: the machine, the command, the table,
// and wrk's own output for each contender.
func report(rows []row, conns, threads int, duration, every time.Duration, upgrades int, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# HTTP servers upgraded under wrk load (make bench-http)\n\n")
	fmt.Fprintf(&b, "Run %s on %s, %d CPUs (`nproc`), Linux %s; %s, %s, %s. Took %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), cpuModel(), runtime.NumCPU(), kernel(),
		firstLine("wrk", "-v"), firstLine("/usr/sbin/nginx", "-v"), firstLine("/usr/sbin/haproxy", "-v"),
		took.Round(time.Second))
	fmt.Fprintf(&b, "Load, the same for each contender: `wrk -t%d -c%d -d%ds --latency http://127.0.0.1:PORT/` "+
		"(keep-alive), an upgrade every %s from %s on (%d asked). Socket errors and non-2xx/3xx are wrk's counts.\n\n",
		threads, conns, int(duration.Seconds()), every, every, upgrades)
	b.WriteString("| contender | upgrade | upgrades done/asked | requests | req/s | connect | read | write | timeout | non-2xx/3xx | p50 | p75 | p90 | p99 | max |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		if r.skipped != "" {
			fmt.Fprintf(&b, "| %s | %s | skipped: %s | | | | | | | | | | | | |\n", r.c.name, r.c.how, oneLine(r.skipped))
			continue
		}
		w := r.wrk
		fmt.Fprintf(&b, "| %s | %s | %d/%d | %d | %.0f | %d | %d | %d | %d | %d | %s | %s | %s | %s | %s |\n",
			r.c.name, r.c.how, r.done, r.asked, w.requests, w.reqPerSec, w.connect, w.read, w.write, w.timeout,
			w.non2xx, fmtDur(w.p50), fmtDur(w.p75), fmtDur(w.p90), fmtDur(w.p99), fmtDur(w.max))
	}
	b.WriteString("\n")
	for _, r := range rows {
		for _, f := range r.failures {
			fmt.Fprintf(&b, "- %s: %s\n", r.c.name, f)
		}
		if len(r.leftovers) > 0 {
			fmt.Fprintf(&b, "- %s: processes left after cleanup: %v\n", r.c.name, r.leftovers)
		}
	}
	b.WriteString("\nwrk's output, per contender:\n")
	for _, r := range rows {
		if r.wrk.raw == "" {
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n\n```\n%s```\n", r.c.name, r.wrk.raw)
	}
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
	return strings.ReplaceAll(s, "|", "\\|")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return "`" + strings.TrimSpace(v) + "`"
		}
	}
	return "an unknown CPU"
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// firstLine is the first line a command prints (nginx -v writes to stderr).
func firstLine(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(l)
}
