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
// With -steady N it measures instead what the library costs between
// upgrades: N rounds of the same wrk load, no upgrade, on bin/httpd as
// shipped and on httpd -plain (the same handlers on a plain net/http
// server), in turn, with each server's CPU time per request and the
// ratios library/plain; then the same for the pdf server's CPU per
// request under upgradebench's paced load (pdf-v2 and pdf-v2 -plain).
// make bench-steady runs that.
//
// With -tls 1.3,1.2 it runs the same over HTTPS, once per TLS version
// (bin/httpd's rolling mode too), every server on a self-signed pair made
// at bench time, the clients held to the version by an OpenSSL
// configuration (OPENSSL_CONF), and adds the TLS handshakes each server
// counted and the version and suite OpenSSL's client negotiated; with
// -h2load-conns N also h2load's HTTP/2 load on each httpd mode. make
// bench-https runs that.
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
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/bench/internal/harness"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		os.Exit(harness.ClientMain(os.Args[2:])) // -steady's pdf load, from the processes it starts
	}
	bin := flag.String("bin", "bin", "`dir` holding httpd (make build)")
	out := flag.String("out", "bench/results/http.md", "markdown `file` to write the results to")
	duration := flag.Duration("duration", 22*time.Second, "wrk's run per contender")
	every := flag.Duration("every", 2*time.Second, "time between upgrades")
	upgrades := flag.Int("upgrades", 10, "upgrades per contender")
	conns := flag.Int("conns", 200, "wrk's connections")
	threads := flag.Int("threads", 2, "wrk's threads")
	only := flag.String("only", "", "comma-separated contender names to run (default: all)")
	install := flag.Bool("install", true, "apt-get install wrk, nginx, haproxy (and nghttp2-client) when missing")
	versions := flag.String("tls", "", "comma-separated TLS `versions` (1.3, 1.2) to run over HTTPS, one table each (default: plain HTTP)")
	h2Conns := flag.Int("h2load-conns", 0, "with -tls: h2load's HTTP/2 connections on each httpd mode (0: no h2load run)")
	h2Streams := flag.Int("h2load-streams", 10, "h2load's concurrent streams per connection (-m)")
	withWrk := flag.Bool("wrk", true, "run wrk on each contender (-wrk=false: the h2load runs alone)")
	steady := flag.Int("steady", 0, "instead: `rounds` of wrk without upgrades on httpd as shipped, then on httpd -plain "+
		"(no library), -duration each, with the server's CPU per request (steady.go)")
	warmup := flag.Duration("warmup", 3*time.Second, "with -steady: wrk's run on each server before the rounds")
	profiles := flag.String("profile", "", "with -steady: `dir` for each server's CPU profile (HTTPD_PROFILE_DIR)")
	var pdf pdfLoad
	flag.IntVar(&pdf.conns, "pdf-conns", 1000, "with -steady: the pdf server's persistent connections (0: no pdf runs)")
	flag.Float64Var(&pdf.rate, "pdf-rate", 10000, "with -steady: the pdf server's paced requests per second")
	flag.DurationVar(&pdf.duration, "pdf-duration", 10*time.Second, "with -steady: each pdf run")
	flag.Parse()
	log.SetFlags(log.Ltime)

	if err := ensureTools(*install, *versions != "", *h2Conns > 0, *steady > 0); err != nil {
		log.Fatal(err)
	}
	if *steady > 0 {
		p := plan{port: 7801, duration: *duration, conns: *conns, threads: *threads}
		doc, err := runSteady(*bin, *steady, *warmup, p, *profiles)
		if err != nil {
			log.Fatal(err)
		}
		if pdf.conns > 0 {
			section, err := runSteadyPDF(*bin, *steady, pdf)
			if err != nil {
				log.Fatal(err)
			}
			doc += section
		}
		writeReport(doc, *out)
		return
	}
	// Processes whose parent exits (an httpd after its upgrade, nginx's new
	// master) become this process's children, so that they are reaped and
	// cleaned up here rather than by an init that may not reap.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Fatalf("prctl PR_SET_CHILD_SUBREAPER: %v", err)
	}
	modes := []string{"full", "listeners"}
	if *versions != "" {
		modes = []string{"full", "rolling", "listeners"} // rolling: the default, and TLS's
	}
	var all []contender
	for _, m := range modes {
		all = append(all, httpdContender(*bin, m, 0))
	}
	if *versions != "" && *h2Conns > 0 {
		// HTTP/2 clients that never reconnect (h2load) stay with the old
		// process for the run, as httphandoff's HTTP2Linger allows.
		all = append(all, httpdContender(*bin, "full", time.Minute))
	}
	all = append(all, nginxContender(false), nginxContender(true), haproxyContender())
	p := plan{port: 7801, duration: *duration, every: *every, upgrades: *upgrades, conns: *conns, threads: *threads,
		h2Conns: *h2Conns, h2Streams: *h2Streams, wrk: *withWrk}
	var rows []row
	started := time.Now()
	for _, v := range strings.Split(*versions, ",") {
		rows = append(rows, runAll(all, *only, v, &p)...)
	}
	writeReport(report(rows, p, time.Since(started)), *out)
}

// writeReport prints doc and writes it to out, unless out is empty.
func writeReport(doc, out string) {
	fmt.Print(doc)
	if out == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
		log.Fatal(err)
	}
}

// ensureTools installs Debian's wrk, nginx and haproxy if one is missing,
// openssl (s_client) with TLS, and nghttp2-client's h2load if h2load; wrk
// alone for the steady-state runs.
func ensureTools(install, tls, h2load, steady bool) error {
	tools := map[string]string{"/usr/bin/wrk": "wrk", "/usr/sbin/nginx": "nginx", "/usr/sbin/haproxy": "haproxy"}
	if steady {
		tools = map[string]string{"/usr/bin/wrk": "wrk"}
	}
	if tls {
		tools["/usr/bin/openssl"] = "openssl"
	}
	if h2load {
		tools["/usr/bin/h2load"] = "nghttp2-client"
	}
	var missing, pkgs []string
	for t, pkg := range tools {
		pkgs = append(pkgs, pkg)
		if _, err := os.Stat(t); err != nil {
			missing = append(missing, filepath.Base(t))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(pkgs)
	if !install {
		return fmt.Errorf("missing %s (apt-get install -y %s)", strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
	log.Printf("installing %s with apt-get (missing: %s)", strings.Join(pkgs, " "), strings.Join(missing, ", "))
	for _, args := range [][]string{{"update"}, append([]string{"install", "-y"}, pkgs...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", args[0], err)
		}
	}
	return nil
}

// plan is each contender's load and upgrades; port is the next free one.
type plan struct {
	port, upgrades, conns, threads int
	h2Conns, h2Streams             int // h2load's, on httpd with TLS; 0 conns: none
	wrk                            bool
	duration, every                time.Duration
}

// loadTool is the client that loads a contender: wrk, or h2load.
type loadTool string

const (
	wrkTool    loadTool = "wrk"
	h2loadTool loadTool = "h2load"
)

// command is the tool's command line against url.
func (p plan) command(tool loadTool, url string) []string {
	secs := strconv.Itoa(int(p.duration.Seconds()))
	if tool == h2loadTool {
		return []string{"h2load", "-t" + strconv.Itoa(p.threads), "-c" + strconv.Itoa(p.h2Conns),
			"-m" + strconv.Itoa(p.h2Streams), "-D" + secs, url}
	}
	return []string{"wrk", "-t" + strconv.Itoa(p.threads), "-c" + strconv.Itoa(p.conns), "-d" + secs + "s", "--latency", url}
}

// row is one contender's outcome under one tool.
type row struct {
	c          contender
	tool       loadTool
	tls        string // the TLS version asked; "" for plain HTTP
	skipped    string // why it did not run, if it did not
	asked      int
	done       int
	failures   []string // why an upgrade was not seen to happen
	notes      []string // what the servers' logs say of the run
	wrk        wrkResult
	h2         h2loadResult
	handshakes int64  // TLS handshakes the servers counted under the load
	counted    string // how; "" if not counted
	negotiated string // the TLS version and suite OpenSSL's client settles on
	leftovers  []int  // processes still running after cleanup
}

func (r row) summary() string {
	if r.skipped != "" {
		return "skipped: " + r.skipped
	}
	var hs string
	if r.counted != "" {
		hs = fmt.Sprintf(", %d handshakes (%s), %s", r.handshakes, r.counted, r.negotiated)
	}
	if r.tool == h2loadTool {
		h := r.h2
		return fmt.Sprintf("upgrades %d/%d, %.0f req/s, %d succeeded, %d failed, %d errored, %d timeout%s",
			r.done, r.asked, h.reqPerSec, h.succeeded, h.failed, h.errored, h.timeout, hs)
	}
	w := r.wrk
	return fmt.Sprintf("upgrades %d/%d, %.0f req/s, errors connect %d read %d write %d timeout %d, non-2xx %d, p99 %s%s",
		r.done, r.asked, w.reqPerSec, w.connect, w.read, w.write, w.timeout, w.non2xx, fmtDur(w.p99), hs)
}

// runAll runs the contenders named in only (all if empty) under wrk, then
// with h2load on httpd, over TLS version (plain HTTP if ""): each alone, on
// a port of its own.
func runAll(all []contender, only, version string, p *plan) []row {
	var rows []row
	one := func(c contender, tool loadTool) {
		if only != "" && !strings.Contains(","+only+",", ","+c.name+",") {
			return
		}
		r := run(c, *p, tool, version)
		p.port++
		log.Printf("%s %s %s: %s", c.name, tool, version, r.summary())
		rows = append(rows, r)
	}
	for _, c := range all {
		if p.wrk && !c.h2only {
			one(c, wrkTool)
		}
	}
	for _, c := range all {
		if version != "" && p.h2Conns > 0 && strings.HasPrefix(c.name, "httpd ") {
			one(c, h2loadTool)
		}
	}
	return rows
}

// run starts c, puts the tool's load on it, upgrades it every p.every,
// reads the handshakes the servers counted, and ends every process it
// started.
func run(c contender, p plan, tool loadTool, version string) (r row) {
	r.c, r.tool, r.tls = c, tool, version
	dir, err := os.MkdirTemp("", "httpbench-")
	if err != nil {
		r.skipped = err.Error()
		return r
	}
	defer os.RemoveAll(dir)
	st := site{dir: dir, port: p.port}
	if version != "" {
		if st.tls, err = newTLSSetup(dir, version); err != nil {
			r.skipped = err.Error()
			return r
		}
	}
	log.Printf("%s: starting in %s on 127.0.0.1:%d", c.name, dir, p.port)
	s, err := c.start(st)
	if s != nil {
		defer func() { r.leftovers = cleanup(s) }()
	}
	if err != nil {
		r.skipped = err.Error()
		return r
	}
	var before int64 // the handshakes of the start's checks
	if s.handshakes != nil {
		if before, _, err = s.handshakes(); err != nil {
			r.skipped = fmt.Sprintf("handshakes before the load: %v", err)
			return r
		}
	}
	out, err := loadAndUpgrade(s, p, st.tls.env(), p.command(tool, fmt.Sprintf("%s://127.0.0.1:%d/", st.scheme(), p.port)), &r)
	if err != nil {
		r.skipped = err.Error()
		return r
	}
	if tool == h2loadTool {
		r.h2, err = parseH2load(out)
	} else {
		r.wrk, err = parseWrk(out)
	}
	if err != nil {
		r.skipped = fmt.Sprintf("%v: %s", err, out)
		return r
	}
	if s.notes != nil {
		r.notes = s.notes()
	}
	if s.handshakes != nil {
		if r.handshakes, r.counted, err = s.handshakes(); err != nil {
			r.counted = "not counted: " + err.Error()
		}
		r.handshakes -= before
		r.negotiated = st.tls.negotiated(p.port) // after the count: one more handshake
	}
	return r
}

// loadAndUpgrade runs the load command with env, upgrades s every
// p.every meanwhile, counting them in r, and returns what the command
// printed.
func loadAndUpgrade(s *server, p plan, env, command []string, r *row) (string, error) {
	var stdout bytes.Buffer
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &stdout, &stdout
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", command[0], err)
	}
	for i := 1; i <= p.upgrades; i++ {
		at := begin.Add(time.Duration(i) * p.every)
		if at.After(begin.Add(p.duration - time.Second)) {
			break // no upgrade in the load's last second: it would not be measured
		}
		time.Sleep(time.Until(at))
		r.asked++
		ok, why := s.upgrade(p.every - 200*time.Millisecond)
		if ok {
			r.done++
		} else {
			r.failures = append(r.failures, fmt.Sprintf("upgrade %d: %s", i, why))
			log.Printf("%s: upgrade %d not seen: %s", r.c.name, i, why)
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", command[0], err, stdout.String())
	}
	return stdout.String(), nil
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

// report is the markdown document: the machine, the command, the tables,
// and each tool's own output for each contender.
func report(rows []row, p plan, took time.Duration) string {
	var b strings.Builder
	title, scheme := "HTTP servers upgraded under wrk load (make bench-http)", "http"
	if len(rows) > 0 && rows[0].tls != "" {
		title, scheme = "HTTPS servers upgraded under wrk and h2load load (make bench-https)", "https"
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	fmt.Fprintf(&b, "Run %s on %s, %d CPUs (`nproc`), Linux %s; %s, %s, %s. Took %s. Load average at the end: %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), cpuModel(), runtime.NumCPU(), kernel(),
		firstLine("wrk", "-v"), firstLine("/usr/sbin/nginx", "-v"), firstLine("/usr/sbin/haproxy", "-v"),
		took.Round(time.Second), loadAverage())
	fmt.Fprintf(&b, "Load, the same for each contender: `%s` "+
		"(keep-alive), an upgrade every %s from %s on (%d asked). Socket errors and non-2xx/3xx are wrk's counts.\n\n",
		strings.Join(p.command(wrkTool, scheme+"://127.0.0.1:PORT/"), " "), p.every, p.every, p.upgrades)
	for _, version := range versionsOf(rows) {
		wrkTable(&b, rows, version, p.conns)
		h2Table(&b, rows, version, p)
	}
	for _, r := range rows {
		for _, f := range append(r.failures, r.notes...) {
			fmt.Fprintf(&b, "- %s: %s\n", r.label(), f)
		}
		if len(r.leftovers) > 0 {
			fmt.Fprintf(&b, "- %s: processes left after cleanup: %v\n", r.label(), r.leftovers)
		}
		if strings.HasPrefix(r.counted, "not counted") {
			fmt.Fprintf(&b, "- %s: handshakes %s\n", r.label(), r.counted)
		}
	}
	b.WriteString("\nEach tool's output, per contender:\n")
	for _, r := range rows {
		if out := r.wrk.raw + r.h2.raw; out != "" {
			fmt.Fprintf(&b, "\n%s:\n\n```\n%s```\n", r.label(), out)
		}
	}
	return b.String()
}

// label names a row in lists: contender, tool, TLS version.
func (r row) label() string {
	if r.tls == "" {
		return r.c.name
	}
	return fmt.Sprintf("%s (%s, TLS %s)", r.c.name, r.tool, r.tls)
}

// versionsOf lists the TLS versions of rows in order, once each.
func versionsOf(rows []row) []string {
	var vs []string
	for _, r := range rows {
		if len(vs) == 0 || vs[len(vs)-1] != r.tls {
			vs = append(vs, r.tls)
		}
	}
	return vs
}

// wrkTable is the table of the wrk rows of version; with TLS, with the
// handshakes the servers counted beyond the conns wrk opened at first.
func wrkTable(b *strings.Builder, rows []row, version string, conns int) {
	tlsCols, tlsSep := "", ""
	if version != "" {
		fmt.Fprintf(b, "TLS %s, wrk:\n\n", version)
		tlsCols, tlsSep = " negotiated | handshakes (server) | new per upgrade |", "---|---:|---:|"
	}
	b.WriteString("| contender | upgrade | upgrades done/asked | requests | req/s | connect | read | write | timeout | non-2xx/3xx | p50 | p75 | p90 | p99 | max |" + tlsCols + "\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + tlsSep + "\n")
	for _, r := range rows {
		if r.tls != version || r.tool != wrkTool {
			continue
		}
		if r.skipped != "" {
			fmt.Fprintf(b, "| %s | %s | skipped: %s | | | | | | | | | | | | |%s\n", r.c.name, r.c.how, oneLine(r.skipped),
				strings.Repeat(" |", strings.Count(tlsSep, "|")))
			continue
		}
		w := r.wrk
		fmt.Fprintf(b, "| %s | %s | %d/%d | %d | %.0f | %d | %d | %d | %d | %d | %s | %s | %s | %s | %s |",
			r.c.name, r.c.how, r.done, r.asked, w.requests, w.reqPerSec, w.connect, w.read, w.write, w.timeout,
			w.non2xx, fmtDur(w.p50), fmtDur(w.p75), fmtDur(w.p90), fmtDur(w.p99), fmtDur(w.max))
		if version != "" {
			fmt.Fprintf(b, " %s | %s |", r.negotiated, r.handshakeCells(conns))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

// h2Table is the table of the h2load rows of version, if any.
func h2Table(b *strings.Builder, rows []row, version string, p plan) {
	header := false
	for _, r := range rows {
		if r.tls != version || r.tool != h2loadTool {
			continue
		}
		if !header {
			fmt.Fprintf(b, "TLS %s, HTTP/2: `%s`:\n\n", version,
				strings.Join(p.command(h2loadTool, "https://127.0.0.1:PORT/"), " "))
			b.WriteString("| contender | upgrades done/asked | requests | succeeded | failed | errored | timeout | req/s | negotiated | handshakes (server) | new per upgrade |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n")
			header = true
		}
		if r.skipped != "" {
			fmt.Fprintf(b, "| %s | skipped: %s | | | | | | | | | |\n", r.c.name, oneLine(r.skipped))
			continue
		}
		h := r.h2
		fmt.Fprintf(b, "| %s | %d/%d | %d | %d | %d | %d | %d | %.0f | %s | %s |\n", r.c.name, r.done, r.asked,
			h.total, h.succeeded, h.failed, h.errored, h.timeout, h.reqPerSec, r.negotiated, r.handshakeCells(p.h2Conns))
	}
	if header {
		b.WriteString("\n")
	}
}

// handshakeCells is the handshakes cell and the new-per-upgrade cell:
// those beyond the conns the client opened at first, over the upgrades.
func (r row) handshakeCells(conns int) string {
	if r.counted == "" || strings.HasPrefix(r.counted, "not counted") {
		return "— | —"
	}
	cell := fmt.Sprintf("%d", r.handshakes)
	if r.done == 0 {
		return cell + " | —"
	}
	return fmt.Sprintf("%s | %.1f", cell, float64(r.handshakes-int64(conns))/float64(r.done))
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

// loadAverage is /proc/loadavg's three averages: the machine is shared.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
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
