package loadcheck

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// dialParallel bounds concurrent dials at the start: somaxconn is 4096
// and a burst beyond the accept backlog costs SYN retries, not load.
const dialParallel = 64

// Run drives the server at cfg.Addr until cfg.Duration passes or ctx is
// done, then drains, runs the final check and reports.
//
// It returns a non-nil error only for an invalid cfg, with a zero Report.
// Everything the server does wrong, including refusing every dial, is in
// the Report with a nil error: check Report.OK.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	st := newStats()
	runID := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	seed := cmp.Or(cfg.Seed, rand.Uint64())
	conns := dialAll(ctx, &cfg, st, runID, seed)

	// The clock starts once the connections are up, so Duration is load.
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	stopProgress := startProgress(&cfg, st)
	var wg sync.WaitGroup
	every := interval(&cfg, len(conns))
	start := time.Now()
	for i, c := range conns {
		// Spread the connections' schedules over one interval.
		first := start.Add(every * time.Duration(i) / time.Duration(len(conns)))
		wg.Go(func() { c.runPersistent(ctx, first, every) })
	}
	wg.Go(func() { runChurn(ctx, &cfg, st, runID) })
	wg.Wait()
	stopProgress()
	return st.report(conns), nil
}

// interval is the time between two requests of one connection; zero
// means unpaced.
func interval(cfg *Config, conns int) time.Duration {
	if cfg.Rate <= 0 || conns == 0 {
		return 0
	}
	return time.Duration(float64(conns) / cfg.Rate * float64(time.Second))
}

// dialAll opens the persistent connections and returns those that came up.
func dialAll(ctx context.Context, cfg *Config, st *stats, runID string, seed uint64) []*conn {
	if cfg.Conns <= 0 {
		return nil
	}
	all := make([]*conn, cfg.Conns)
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	for i := range all {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			m := newModel(fmt.Sprintf("gw-%d", i), fmt.Sprintf("a%s-%d", runID, i), cfg.Accounts)
			if c, err := dial(ctx, cfg, st, m); err == nil {
				c.rng = rand.New(rand.NewPCG(seed, uint64(i)))
				all[i] = c
			}
		})
	}
	wg.Wait()
	var up []*conn
	for _, c := range all {
		if c != nil {
			up = append(up, c)
		}
	}
	st.conns.Store(uint64(len(up)))
	return up
}

// startProgress writes a progress line every cfg.ReportEvery until the
// returned stop is called.
func startProgress(cfg *Config, st *stats) (stop func()) {
	if cfg.Progress == nil || cfg.ReportEvery <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(cfg.ReportEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintln(cfg.Progress, st.progress())
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
