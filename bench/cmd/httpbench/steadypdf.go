package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/bench/internal/harness"
	"github.com/handoff-dev/handoff/bench/internal/result"
)

// pdfLoad is the pdf server's load in the steady-state runs: paced
// requests over persistent connections from client processes (package
// harness, upgradebench's load), no upgrade.
type pdfLoad struct {
	conns    int
	rate     float64
	duration time.Duration
}

// runSteadyPDF runs rounds of the pdf load on bin/pdf-v2 as shipped
// (harness mode none: the library, full mode, no SIGHUP) and on pdf-v2
// -plain (the same protocol and ledger on plain net.Conns), library
// first in odd rounds, and returns the markdown section: each server's
// CPU per request (the harness's, /proc over the run) and the ratio.
func runSteadyPDF(bin string, rounds int, ld pdfLoad) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	modes := []string{result.ModeNone, result.ModePlain}
	runs := map[string][]result.Run{}
	for i := range rounds {
		for k := range modes {
			mode := modes[k]
			if i%2 == 1 {
				mode = modes[len(modes)-1-k]
			}
			r, err := pdfRun(self, bin, mode, ld)
			if err != nil {
				return "", fmt.Errorf("pdf %s round %d: %w", mode, i+1, err)
			}
			log.Printf("round %d pdf %s: %v CPU/req, %d requests, %d lost, %d failed", i+1, mode,
				r.ServerCPUPerReq, r.Requests, r.Lost, r.Failed)
			runs[mode] = append(runs[mode], r)
		}
	}
	return steadyPDFReport(runs[result.ModeNone], runs[result.ModePlain], ld), nil
}

// pdfRun is one run of the load on the server in mode.
func pdfRun(self, bin, mode string, ld pdfLoad) (result.Run, error) {
	dir, err := os.MkdirTemp("", "httpbench-pdf-")
	if err != nil {
		return result.Run{}, err
	}
	defer os.RemoveAll(dir)
	r, err := harness.Run(harness.Config{Self: self, Server: filepath.Join(bin, "pdf-v2"), Mode: mode,
		Conns: ld.conns, Rate: ld.rate, Duration: ld.duration, Dir: dir}, func(string, ...any) {})
	if err == nil && r.Lost+r.Failed > 0 {
		err = fmt.Errorf("%d requests lost, %d failed", r.Lost, r.Failed)
	}
	return r, err
}

// steadyPDFReport is the pdf section of the report: a row per round.
func steadyPDFReport(lib, plain []result.Run, ld pdfLoad) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## The pdf server\n\n**library** is bin/pdf-v2 as shipped (full mode, its connections read "+
		"through handoff.Conn.Next), **plain** is `pdf-v2 -plain` (the same protocol, handler and ledger on "+
		"net.Conns read through a bufio.Scanner, no library). Load: upgradebench's clients, %d persistent "+
		"connections, %.0f requests/s paced, %s, no upgrade; the same order per round as above. CPU/req is "+
		"the server's user+system time over the run divided by the requests paced.\n\n",
		ld.conns, ld.rate, ld.duration)
	b.WriteString("| round | CPU/req library | CPU/req plain | CPU/req library/plain | p99 library | p99 plain |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|\n")
	var ratios, libCPU, plainCPU []float64
	for i := range lib {
		l, q := lib[i], plain[i]
		ratios = append(ratios, float64(l.ServerCPUPerReq)/float64(q.ServerCPUPerReq))
		libCPU, plainCPU = append(libCPU, float64(l.ServerCPUPerReq)), append(plainCPU, float64(q.ServerCPUPerReq))
		fmt.Fprintf(&b, "| %d | %s | %s | %.3f | %s | %s |\n", i+1, fmtMicros(l.ServerCPUPerReq),
			fmtMicros(q.ServerCPUPerReq), ratios[i], fmtDur(l.OutWindow.P99), fmtDur(q.OutWindow.P99))
	}
	fmt.Fprintf(&b, "| median | %s | %s | **%.3f** | | |\n", fmtMicros(time.Duration(median(libCPU))),
		fmtMicros(time.Duration(median(plainCPU))), median(ratios))
	return b.String()
}
