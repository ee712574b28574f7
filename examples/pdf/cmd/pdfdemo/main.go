// Command pdfdemo shows a live upgrade of the PDF charging server under
// load: it starts pdf-v1 from a work directory, drives it with persistent
// pipelining connections and new ones, upgrades it by SIGHUP to v2, with
// handoffctl to v2 again and to a binary that dies at once (which must roll
// back, and handoffctl exit 1), and by SIGHUP back to v1, and checks that no
// connection, request, balance or /metrics counter was lost.
//
// It exits 0 only if every check passed, 1 if one failed and 2 if the
// demo could not run.
//
//	go -C examples build -o ../bin/pdf-v1 ./pdf/cmd/pdf-v1
//	go -C examples build -o ../bin/pdf-v2 ./pdf/cmd/pdf-v2
//	go build -o bin/handoffctl ./cmd/handoffctl
//	go -C examples run ./pdf/cmd/pdfdemo -bin ../bin
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/handoff-dev/handoff/examples/pdf/internal/demo"
)

func main() {
	os.Exit(run())
}

func run() int {
	var cfg demo.Config
	flag.StringVar(&cfg.BinDir, "bin", demo.DefaultBinDir, "`dir`ectory holding pdf-v1, pdf-v2 and handoffctl")
	flag.StringVar(&cfg.Addr, "addr", "", "`address` for the server (default: a free port on 127.0.0.1)")
	flag.IntVar(&cfg.Conns, "conns", demo.DefaultConns, "persistent pipelining connections")
	flag.Float64Var(&cfg.Rate, "rate", demo.DefaultRate, "total requests per second on the persistent connections")
	flag.Float64Var(&cfg.Churn, "churn", demo.DefaultChurn, "new short-lived connections per second")
	flag.DurationVar(&cfg.Settle, "settle", 0,
		"load time before, between and after upgrades (default: long enough for every connection to meet every process)")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := demo.Run(ctx, cfg, os.Stdout)
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "pdfdemo:", err)
		return 2
	case !res.OK():
		return 1
	}
	return 0
}
