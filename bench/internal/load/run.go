package load

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runner is one process's run.
type runner struct {
	cfg   Config
	epoch time.Time // time zero of the records; set before the first send
	conns []*pconn
	done  atomic.Bool

	mu      sync.Mutex // guards records and totals
	records []Record
	totals  Totals
	dups    int
}

func (r *runner) now() int64     { return time.Since(r.epoch).Nanoseconds() }
func (r *runner) finished() bool { return r.done.Load() }
func (r *runner) duplicate()     { r.mu.Lock(); r.dups++; r.mu.Unlock() }
func (r *runner) dropped(first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.totals.Dropped++
	if first {
		r.totals.DroppedConns++
	}
}
func (r *runner) count(f func(*Totals)) { r.mu.Lock(); f(&r.totals); r.mu.Unlock() }

func (r *runner) sent(rid int) {
	now := r.now()
	r.mu.Lock()
	r.records[rid].Sent = now
	r.mu.Unlock()
}

func (r *runner) finish(rid int, o Outcome, at int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := &r.records[rid]
	if rec.Outcome != Pending {
		r.dups++
		return
	}
	rec.Outcome, rec.Replied = o, at
}

// Result is what Run measured.
type Result struct {
	Records    []Record
	Totals     Totals
	Duplicated int
}

// Connect opens every connection of cfg; Start then runs the load. The
// split lets a caller with several client processes start them together.
func Connect(cfg Config) (*Client, error) {
	if cfg.Conns <= 0 || cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.Churn < 0 {
		return nil, fmt.Errorf("load: need connections, a rate and a duration above 0 (got %d, %g/s, %v) and churn >= 0",
			cfg.Conns, cfg.Rate, cfg.Duration)
	}
	r := &runner{cfg: cfg}
	r.records = make([]Record, 0, int(cfg.Rate*cfg.Duration.Seconds()*1.05)+16)
	sem := make(chan struct{}, 64)
	errs := make(chan error, cfg.Conns)
	for i := range cfg.Conns {
		p := &pconn{idx: uint32(i), acct: fmt.Sprintf("%s-%d", cfg.Tag, i), run: r}
		r.conns = append(r.conns, p)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- p.connect(true)
		}()
	}
	var err error
	for range cfg.Conns {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		r.stop()
		return nil, fmt.Errorf("load: connect: %w", err)
	}
	return &Client{r: r}, nil
}

// Client is a connected load, ready to Start.
type Client struct{ r *runner }

// Run paces requests for cfg.Duration, with epoch as time zero of the
// records, waits up to drain for the last replies, closes everything and
// returns the records.
func (c *Client) Run(epoch time.Time, drain time.Duration) Result {
	r := c.r
	r.epoch = epoch
	stopChurn := make(chan struct{})
	var wg sync.WaitGroup
	if r.cfg.Churn > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); r.churn(stopChurn) }()
	}
	r.pace()
	close(stopChurn)
	wg.Wait()
	deadline := time.Now().Add(drain)
	for time.Now().Before(deadline) && r.outstanding() > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	r.stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.records {
		if r.records[i].Outcome == Pending {
			r.records[i].Outcome = Lost
		}
	}
	return Result{Records: r.records, Totals: r.totals, Duplicated: r.dups}
}

// pace sends requests on a fixed schedule, round robin over the
// connections, whatever the replies do: a slow server shows up as
// latency, not as a lower rate (no coordinated omission). Due times are
// what the records keep.
func (r *runner) pace() {
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	start := time.Now()
	end := start.Add(r.cfg.Duration)
	next := start
	for i := 0; next.Before(end); i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		p := r.conns[i%len(r.conns)]
		r.mu.Lock()
		rid := len(r.records)
		r.records = append(r.records, Record{Due: next.Sub(r.epoch).Nanoseconds(), Conn: p.idx})
		r.mu.Unlock()
		p.send(rid)
		next = next.Add(interval)
	}
}

func (r *runner) outstanding() int {
	n := 0
	for _, p := range r.conns {
		p.mu.Lock()
		n += len(p.outstanding) + len(p.queue)
		p.mu.Unlock()
	}
	return n
}

func (r *runner) stop() {
	r.done.Store(true)
	for _, p := range r.conns {
		p.mu.Lock()
		if p.c != nil {
			p.c.Close()
		}
		p.mu.Unlock()
	}
}

// churn opens short-lived connections: HELLO, WELCOME, close. A refused
// or reset one is what a client sees of an upgrade that drops the
// listening socket even for a moment.
// It returns once every dial it started has ended, so that they all count.
func (r *runner) churn(stop <-chan struct{}) {
	t := time.NewTicker(time.Duration(float64(time.Second) / r.cfg.Churn))
	defer t.Stop()
	var dials sync.WaitGroup
	defer dials.Wait()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		dials.Add(1)
		go func() {
			defer dials.Done()
			c, _, err := r.dialHello(fmt.Sprintf("%s-churn-%d", r.cfg.Tag, i))
			r.count(func(tt *Totals) {
				switch {
				case err == nil:
					tt.ChurnOK++
				case errors.Is(err, syscall.ECONNREFUSED):
					tt.ChurnRefused++
				default:
					tt.ChurnReset++
				}
			})
			if err == nil {
				c.Close()
			}
		}()
	}
}
