package main

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	iproc "github.com/handoff-dev/handoff/internal/proc"
)

// steadyServer is one of the two servers of the steady-state benchmark:
// bin/httpd as shipped (its default mode, rolling, on the library) or
// httpd -plain (the same handlers on a plain net/http server).
type steadyServer struct {
	name string
	args []string // after -listen
	port int
	s    *server
	pid  int
}

// steadyRun is one wrk run on one server, and the server's CPU over it.
type steadyRun struct {
	wrk wrkResult
	cpu time.Duration
}

// cpuPerReq is the server's CPU time per request of the run.
func (r steadyRun) cpuPerReq() time.Duration {
	return r.cpu / time.Duration(max(1, r.wrk.requests))
}

// runSteady starts both servers, warms each up, then runs rounds of wrk
// on each in turn, library then plain, then plain then library, with no
// upgrade, and returns the report. With profileDir set, each server writes a CPU profile of its
// life there (HTTPD_PROFILE_DIR), at its exit.
func runSteady(bin string, rounds int, warmup time.Duration, p plan, profileDir string) (string, error) {
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return "", err
		}
		abs, err := filepath.Abs(profileDir)
		if err != nil {
			return "", err
		}
		os.Setenv("HTTPD_PROFILE_DIR", abs) // the servers inherit it
	}
	dir, err := os.MkdirTemp("", "httpbench-steady-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	servers := []*steadyServer{
		{name: "library", args: []string{"-drain-timeout", "5s"}, port: p.port},
		{name: "plain", args: []string{"-plain", "-drain-timeout", "5s"}, port: p.port + 1},
	}
	for _, sv := range servers {
		if err := sv.start(bin, dir); err != nil {
			return "", err
		}
		defer sv.stop()
	}
	started := time.Now()
	for _, sv := range servers {
		if _, err := sv.run(p, warmup); err != nil {
			return "", fmt.Errorf("%s warm-up: %w", sv.name, err)
		}
	}
	runs := make([][]steadyRun, len(servers))
	for i := range rounds {
		// Library first in odd rounds, plain first in even ones: a load
		// on the machine that grows or shrinks over a round (it is
		// shared) favours neither.
		for k := range servers {
			j := k
			if i%2 == 1 {
				j = len(servers) - 1 - k
			}
			sv := servers[j]
			r, err := sv.run(p, p.duration)
			if err != nil {
				return "", fmt.Errorf("%s round %d: %w", sv.name, i+1, err)
			}
			log.Printf("round %d %s: %.0f req/s, %v CPU/req, p50 %s p99 %s", i+1, sv.name, r.wrk.reqPerSec,
				r.cpuPerReq(), fmtDur(r.wrk.p50), fmtDur(r.wrk.p99))
			runs[j] = append(runs[j], r)
		}
	}
	return steadyReport(runs[0], runs[1], p, rounds, warmup, time.Since(started)), nil
}

// start deploys httpd in dir under the server's name and starts it.
func (sv *steadyServer) start(bin, dir string) error {
	exe := filepath.Join(dir, "httpd-"+sv.name)
	if err := copyFile(filepath.Join(bin, "httpd"), exe); err != nil {
		return err
	}
	pidfile := filepath.Join(dir, sv.name+".pid")
	args := append([]string{"-listen", fmt.Sprintf("127.0.0.1:%d", sv.port), "-pidfile", pidfile}, sv.args...)
	s, err := launch(filepath.Join(dir, sv.name+".log"), exe, args...)
	if err != nil {
		return err
	}
	sv.s = s
	if err := s.awaitServing(site{dir: dir, port: sv.port}, "v1 "); err != nil {
		return fmt.Errorf("%s: %w", sv.name, err)
	}
	sv.pid = readPID(pidfile)
	if sv.pid == 0 {
		return fmt.Errorf("%s: no pid in %s", sv.name, pidfile)
	}
	return nil
}

// stop ends the server's process group (SIGTERM first: a CPU profile is
// written at the exit).
func (sv *steadyServer) stop() {
	if sv.s != nil {
		if left := cleanup(sv.s); len(left) > 0 {
			log.Printf("%s: processes left after cleanup: %v", sv.name, left)
		}
	}
}

// run puts wrk on the server for d and reads the server's CPU around it.
func (sv *steadyServer) run(p plan, d time.Duration) (steadyRun, error) {
	p.duration = d
	command := p.command(wrkTool, fmt.Sprintf("http://127.0.0.1:%d/", sv.port))
	cpu0 := iproc.CPUTime(sv.pid)
	out, err := exec.Command(command[0], command[1:]...).CombinedOutput()
	cpu := iproc.CPUTime(sv.pid) - cpu0
	if err != nil {
		return steadyRun{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	w, err := parseWrk(string(out))
	if err != nil {
		return steadyRun{}, err
	}
	if errs := w.connect + w.read + w.write + w.timeout + w.non2xx; errs > 0 {
		return steadyRun{}, fmt.Errorf("wrk saw %d errors: %s", errs, out)
	}
	return steadyRun{wrk: w, cpu: cpu}, nil
}

// steadyReport is the markdown document: the machine, the command, one
// row per round with the ratios library/plain, and their medians.
func steadyReport(lib, plain []steadyRun, p plan, rounds int, warmup, took time.Duration) string {
	var b strings.Builder
	b.WriteString("# The library's cost between upgrades (make bench-steady)\n\n")
	fmt.Fprintf(&b, "Run %s on %s, %d CPUs (`nproc`), Linux %s; %s. Took %s. Load average at the end: %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), cpuModel(), runtime.NumCPU(), kernel(),
		firstLine("wrk", "-v"), took.Round(time.Second), loadAverage())
	fmt.Fprintf(&b, "The same handlers, no upgrade: **library** is bin/httpd as shipped (rolling mode, "+
		"served through httphandoff on handoff.Conn), **plain** is `httpd -plain` (a net/http server on "+
		"net.Listen, no library). Each round runs `%s` on each, one after the other, "+
		"library first in odd rounds and plain first in even ones; %d rounds after a %s warm-up of each. CPU/req is the server's user+system time (/proc/PID/stat) over the run, "+
		"divided by wrk's requests.\n\n",
		strings.Join(p.command(wrkTool, "http://127.0.0.1:PORT/"), " "), rounds, warmup)
	b.WriteString("| round | req/s library | req/s plain | req/s library/plain | CPU/req library | CPU/req plain | " +
		"CPU/req library/plain | p50 library | p50 plain | p99 library | p99 plain |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var rps, cpu []float64
	for i := range lib {
		l, q := lib[i], plain[i]
		rps = append(rps, l.wrk.reqPerSec/q.wrk.reqPerSec)
		cpu = append(cpu, float64(l.cpuPerReq())/float64(q.cpuPerReq()))
		fmt.Fprintf(&b, "| %d | %.0f | %.0f | %.3f | %s | %s | %.3f | %s | %s | %s | %s |\n", i+1,
			l.wrk.reqPerSec, q.wrk.reqPerSec, rps[i], fmtMicros(l.cpuPerReq()), fmtMicros(q.cpuPerReq()), cpu[i],
			fmtDur(l.wrk.p50), fmtDur(q.wrk.p50), fmtDur(l.wrk.p99), fmtDur(q.wrk.p99))
	}
	med := func(rs []steadyRun, f func(steadyRun) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return median(v)
	}
	reqs := func(r steadyRun) float64 { return r.wrk.reqPerSec }
	perReq := func(r steadyRun) float64 { return float64(r.cpuPerReq()) }
	p50 := func(r steadyRun) float64 { return float64(r.wrk.p50) }
	p99 := func(r steadyRun) float64 { return float64(r.wrk.p99) }
	fmt.Fprintf(&b, "| median | %.0f | %.0f | **%.3f** | %s | %s | **%.3f** | %s | %s | %s | %s |\n\n",
		med(lib, reqs), med(plain, reqs), median(rps),
		fmtMicros(time.Duration(med(lib, perReq))), fmtMicros(time.Duration(med(plain, perReq))), median(cpu),
		fmtDur(time.Duration(med(lib, p50))), fmtDur(time.Duration(med(plain, p50))),
		fmtDur(time.Duration(med(lib, p99))), fmtDur(time.Duration(med(plain, p99))))
	fmt.Fprintf(&b, "The ratios' median is the median of each round's ratio; the goal (issue 21, item 6) is "+
		"req/s library/plain ≥ 0.97 and CPU/req library/plain ≤ 1.03.\n")
	return b.String()
}

// median of v; 0 if empty.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtMicros(d time.Duration) string {
	return fmt.Sprintf("%.2fµs", float64(d)/float64(time.Microsecond))
}
