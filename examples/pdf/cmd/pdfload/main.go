// Command pdfload drives a pdf server with paced gateway traffic and
// checks every reply against its own model of the server's state.
//
// It exits 0 only if no reply was wrong, missing or duplicated, no
// connection was dropped or stalled and no dial failed: run it across a
// live upgrade and the exit status is the verdict.
//
//	pdfload -addr 127.0.0.1:7070 -conns 200 -rate 2000 -churn 50 -duration 30s
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/handoff-dev/handoff/examples/pdf/internal/loadcheck"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		cfg        loadcheck.Config
		asJSON     bool
		untilStdin bool
	)
	flag.StringVar(&cfg.Addr, "addr", loadcheck.DefaultAddr, "server `address`")
	flag.IntVar(&cfg.Conns, "conns", loadcheck.DefaultConns, "persistent pipelining connections (0: none)")
	flag.IntVar(&cfg.Pipeline, "pipeline", loadcheck.DefaultPipeline, "requests in flight per connection")
	flag.Float64Var(&cfg.Rate, "rate", loadcheck.DefaultRate, "total requests per second, on a schedule (0: unpaced)")
	flag.Float64Var(&cfg.Churn, "churn", loadcheck.DefaultChurn, "new short-lived connections per second (0: none)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "how long to run (0: until SIGINT/SIGTERM)")
	flag.DurationVar(&cfg.StallTimeout, "stall-timeout", loadcheck.DefaultStallTimeout, "wait for a reply before declaring a stall")
	flag.DurationVar(&cfg.ReportEvery, "report-every", 0, "print progress to stderr this often (0: never)")
	flag.Uint64Var(&cfg.Seed, "seed", 0, "seed for the request mix (0: random)")
	flag.BoolVar(&cfg.SharedPIDs, "shared-pids", false,
		"the server's processes may share a pid (containers: each is pid 1), so a pid does not identify one")
	flag.BoolVar(&asJSON, "json", false, "print the final report as JSON")
	flag.BoolVar(&untilStdin, "until-stdin-eof", false, "also stop when stdin closes")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		return 2
	}
	cfg.Conns, cfg.Rate, cfg.Churn = off(cfg.Conns), off(cfg.Rate), off(cfg.Churn)
	cfg.Progress = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if untilStdin {
		ctx = stopAtEOF(ctx, os.Stdin)
	}
	rep, err := loadcheck.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pdfload:", err)
		return 2
	}
	if err := printReport(rep, asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "pdfload:", err)
		return 2
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

// off turns a flag's 0 ("none") into the Config's negative, since a zero
// Config field means "default".
func off[T int | float64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// stopAtEOF ends the run when r closes, so a harness can stop pdfload by
// closing a pipe rather than finding its pid.
func stopAtEOF(ctx context.Context, r io.Reader) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		io.Copy(io.Discard, r)
	}()
	return ctx
}

func printReport(rep loadcheck.Report, asJSON bool) error {
	if !asJSON {
		_, err := fmt.Print(rep)
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
