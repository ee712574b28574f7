package loadcheck

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// runChurn opens Config.Churn short-lived connections per second until
// ctx ends, then waits for the ones still open.
func runChurn(ctx context.Context, cfg *Config, st *stats, runID string) {
	if cfg.Churn <= 0 {
		return
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Churn))
	defer t.Stop()
	limit := make(chan struct{}, cfg.ChurnLimit)
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case limit <- struct{}{}:
			wg.Go(func() {
				defer func() { <-limit }()
				churnOne(ctx, cfg, st, runID, n)
			})
		default:
			st.churnSkipped.Add(1)
		}
	}
}

// churnOne is one short-lived connection. Once begun it finishes its
// script even if ctx ends, so the end of a run never looks like a fault.
func churnOne(ctx context.Context, cfg *Config, st *stats, runID string, n int) {
	m := newModel(fmt.Sprintf("gw-churn-%d", n), fmt.Sprintf("c%s-%d", runID, n), 1)
	// A dial begun before the end still counts: a refusal in the last
	// millisecond of a run is a refusal. So the end of ctx must not cut it.
	c, err := dial(context.WithoutCancel(ctx), cfg, st, m)
	if err != nil {
		return
	}
	defer c.close()
	t := time.NewTimer(cfg.DrainTimeout)
	defer t.Stop()
	script := []func() pending{
		m.hello,
		func() pending { return m.topup(0, 100) },
		func() pending { return m.charge(0, 30) },
		func() pending { return m.charge(0, 100) }, // DENY: 70 left
		func() pending { return m.balance(0) },
		m.whoami,
		m.version,
	}
	for _, gen := range script {
		if !c.send(nil, t.C, gen) {
			return
		}
	}
	if c.drain() && c.errs.Load() == 0 {
		st.churnOK.Add(1)
	}
}
