// Command upgradebench measures what an upgrade costs the clients of the
// pdf server, in each upgrade mode, at several scales, under paced load:
// connection survival, lost, duplicated and failed requests, refused new
// connections, latency in and outside the upgrade windows, and how long
// each upgrade takes; mode none runs the same load without upgrades, the
// baseline for the stalls. See bench/README.md.
//
//	upgradebench -bin bin -conns 1000,5000,15000 -modes full,rolling,listeners,restart,none
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/bench/internal/floor"
	"github.com/handoff-dev/handoff/bench/internal/harness"
	"github.com/handoff-dev/handoff/bench/internal/result"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		os.Exit(harness.ClientMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && floor.IsRole(os.Args[1]) {
		os.Exit(floor.Main(os.Args[1:]))
	}
	os.Exit(run())
}

func run() int {
	bin := flag.String("bin", "bin", "directory holding pdf-v2")
	modes := flag.String("modes", "full,rolling,listeners,restart,none",
		"upgrade modes to compare (pdf's -upgrade-mode), and none: the same load without upgrades")
	scales := flag.String("conns", "1000,5000,15000", "persistent connections, one run each")
	rate := flag.Float64("rate", 10000, "paced requests per second over all connections")
	churn := flag.Float64("churn", 50, "new connections per second")
	dur := flag.Duration("duration", 20*time.Second, "length of each run")
	ups := flag.Int("upgrades", 3, "upgrades per run")
	out := flag.String("out", "bench/results", "directory for the JSON and the charts")
	accounts := flag.Int("accounts", 0, "accounts in the server's ledger before the clients start, "+
		"topped up through the protocol: the state an upgrade moves (the clients' own accounts besides)")
	keep := flag.Bool("keep", false, "keep each run's work directory (server log, client records)")
	profile := flag.String("profile", "", "write the servers' CPU profiles, traces and heap profiles of each "+
		"upgrade under `dir`/<mode>-<conns> (pdf's PDF_PROFILE_DIR; slows the servers down)")
	flag.Parse()

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	suite := &result.Suite{Started: time.Now().UTC().Round(time.Second), Rate: *rate,
		Command: "upgradebench " + strings.Join(os.Args[1:], " "), Machine: machine()}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	for _, n := range ints(*scales) {
		fl, err := floor.Measure(self, n, 3)
		if err != nil {
			logf("floor at %d conns: %v", n, err)
			return 1
		}
		logf("floor at %d conns: %v (interrupt %v, pass %v); pause floor %v (records and resume %v)",
			n, fl.Floor(), fl.Interrupt, fl.Pass, fl.PauseFloor(), fl.Resume)
		suite.Floors = append(suite.Floors, result.Floor{Conns: n, Interrupt: fl.Interrupt, Pass: fl.Pass,
			Convert: fl.Convert, Resume: fl.Resume})
		for _, mode := range strings.Split(*modes, ",") {
			dir, _ := os.MkdirTemp("", "upgradebench-")
			if *profile != "" {
				os.Setenv("PDF_PROFILE_DIR", filepath.Join(*profile, fmt.Sprintf("%s-%d", mode, n)))
			}
			r, err := harness.Run(harness.Config{Self: self, Server: filepath.Join(*bin, "pdf-v2"),
				Mode: mode, Conns: n, Rate: *rate, Churn: *churn, Duration: *dur, Upgrades: *ups, Accounts: *accounts, Dir: dir}, logf)
			if err != nil {
				logf("%s at %d conns: %v (work dir %s kept)", mode, n, err, dir)
				return 1
			}
			if *keep {
				logf("  work directory %s kept", dir)
			} else {
				os.RemoveAll(dir)
			}
			r.Floor, r.PauseFloor = fl.Floor(), fl.PauseFloor()
			suite.Runs = append(suite.Runs, r)
		}
	}
	if err := suite.Markdown(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.MkdirAll(*out, 0o755)
	if err := suite.WriteJSON(filepath.Join(*out, "upgrade.json")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	charts, err := suite.Charts(*out, "latency")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logf("wrote %s and %s", filepath.Join(*out, "upgrade.json"), strings.Join(charts, ", "))
	return 0
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func machine() result.Machine {
	m := result.Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
