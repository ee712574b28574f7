package load

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Report is what a run measured.
type Report struct {
	Clients, Echo int
	Upgrades      []Upgrade

	Sent       int64 // chat messages sent
	Delivered  int64 // ... that came back to their sender
	Unechoed   int64 // ... that never did
	Received   int64 // room messages received, all clients
	Missed     int64 // room messages a client never got (ids skipped, or said while it was away)
	Reordered  int64 // room messages that came after a later one
	Duplicates int64 // room messages that came twice in a row (dropped by id)
	Resets     int64 // rejoins to a server that numbered from scratch (its rooms were lost)
	Unsent     int64 // sends due while a client was disconnected
	Reconnects int64
	DialFails  int64 // dials that failed while reconnecting

	EchoSent, EchoOK, EchoBad int64 // echo replies whose count was, or was not, one more than the last

	// From a message's send to its delivery, at every member of its room:
	// LatencyMax is the longest delivery gap.
	LatencyP50, LatencyP99, LatencyP999, LatencyMax time.Duration
	LongestSilence                                  time.Duration // longest time a chat client got nothing (the schedule's randomness, or an outage)
}

// Upgrade is one SIGHUP of the server.
type Upgrade struct {
	At         time.Time
	From, To   int           // pids; equal in restart mode
	Took       time.Duration // until the new process served (restart: every client reconnected)
	Signals    int           // SIGHUPs sent (more than one if the server was still taking the last upgrade's connections)
	Reconnects int           // client reconnects from this SIGHUP to the next
	Err        string        `json:",omitempty"`
}

// Run connects every client, sends for cfg.Duration while upgrading the
// server on schedule, waits cfg.Settle and reports.
func Run(cfg Config) (Report, error) {
	if err := cfg.defaults(); err != nil {
		return Report{}, err
	}
	st := &stats{}
	clients := make([]*client, 0, cfg.Clients+cfg.Echo)
	for i := range cfg.Clients {
		clients = append(clients, newClient(&cfg, st, i, false))
	}
	for i := range cfg.Echo {
		clients = append(clients, newClient(&cfg, st, cfg.Clients+i, true))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var readers sync.WaitGroup
	defer readers.Wait()
	if err := connectAll(ctx, cfg, clients, &readers); err != nil {
		cancel()
		return Report{}, err
	}
	cfg.Logf("%d clients connected; sending every %v for %v", len(clients), cfg.Every, cfg.Duration)

	// Sends go on for cfg.Duration, and until the last upgrade has ended.
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	var senders sync.WaitGroup
	for _, c := range clients {
		senders.Add(1)
		go func() { defer senders.Done(); c.sendEvery(sendCtx, cfg.Every) }()
	}
	end := time.Now().Add(cfg.Duration)
	ups := upgradeOnSchedule(ctx, cfg, clients)
	time.Sleep(time.Until(end))
	stopSending()
	senders.Wait()
	cfg.Logf("sends over; waiting up to %v for what is in flight", cfg.Settle)
	awaitInFlight(clients, st, cfg.Settle)
	cancel()
	for _, c := range clients {
		c.mu.Lock()
		if c.ws != nil {
			c.ws.NetConn().Close()
		}
		c.mu.Unlock()
	}
	readers.Wait()
	return report(cfg, st, clients, ups), nil
}

// awaitInFlight waits until every send has come back (a chat message to
// its sender, an echo with its reply) and the members of each room have
// got the same last message, for at most d: what is still out then is
// counted as never back.
func awaitInFlight(clients []*client, st *stats, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		out := st.echoSent.Load() - st.echoOK.Load() - st.echoBad.Load()
		last := map[string]uint64{}
		for _, c := range clients {
			out += int64(c.unechoed())
			if c.echo {
				continue
			}
			c.mu.Lock()
			e := c.expect
			c.mu.Unlock()
			if l, ok := last[c.room]; ok && l != e {
				out++
			}
			last[c.room] = max(last[c.room], e)
		}
		if out <= 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connectAll dials every client, cfg.Dialers at a time, and starts its
// reader; a first dial that fails fails the run.
func connectAll(ctx context.Context, cfg Config, clients []*client, readers *sync.WaitGroup) error {
	sem := make(chan struct{}, cfg.Dialers)
	errs := make(chan error, len(clients))
	for _, c := range clients {
		sem <- struct{}{}
		first := make(chan error, 1)
		readers.Add(1)
		go func() { defer readers.Done(); c.run(ctx, first) }()
		go func() {
			err := <-first
			<-sem
			if err != nil {
				err = fmt.Errorf("load: %s: first dial: %w", c.nick, err)
			}
			errs <- err
		}()
	}
	var firstErr error
	for range clients {
		if err := <-errs; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func report(cfg Config, st *stats, clients []*client, ups []Upgrade) Report {
	r := Report{Clients: cfg.Clients, Echo: cfg.Echo, Upgrades: ups,
		Sent: st.sent.Load(), Delivered: st.delivered.Load(), Received: st.received.Load(),
		Missed: st.missed.Load(), Reordered: st.reordered.Load(), Duplicates: st.duplicates.Load(), Resets: st.resets.Load(),
		Unsent: st.unsent.Load(), Reconnects: st.reconnects.Load(), DialFails: st.dialFailures.Load(),
		EchoSent: st.echoSent.Load(), EchoOK: st.echoOK.Load(), EchoBad: st.echoBad.Load()}
	for _, c := range clients {
		r.Unechoed += int64(c.unechoed())
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	r.LatencyP50, r.LatencyP99, r.LatencyP999 = st.hist.quantile(0.5), st.hist.quantile(0.99), st.hist.quantile(0.999)
	r.LatencyMax, r.LongestSilence = st.hist.max, st.longestGap
	sort.Slice(st.reconnectAt, func(i, j int) bool { return st.reconnectAt[i].Before(st.reconnectAt[j]) })
	for i := range r.Upgrades {
		end := time.Now()
		if i+1 < len(r.Upgrades) {
			end = r.Upgrades[i+1].At
		}
		for _, t := range st.reconnectAt {
			if !t.Before(r.Upgrades[i].At) && t.Before(end) {
				r.Upgrades[i].Reconnects++
			}
		}
	}
	return r
}
