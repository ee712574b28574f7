package load

import (
	"sync"
	"sync/atomic"
	"time"
)

// stats are the counts of every client of a run.
type stats struct {
	sent, delivered, received atomic.Int64 // own sends; own sends back; room messages got
	missed, reordered         atomic.Int64 // room ids skipped; ids that went back
	duplicates                atomic.Int64 // the last id again
	resets                    atomic.Int64 // rejoins to a server that numbers from scratch
	unsent                    atomic.Int64 // sends due while disconnected
	reconnects, dialFailures  atomic.Int64
	echoSent, echoOK, echoBad atomic.Int64

	mu          sync.Mutex
	reconnectAt []time.Time // when each reconnect began (the drop)
	longestGap  time.Duration
	hist        latencyHist
}

func (s *stats) reconnect(at time.Time) {
	s.reconnects.Add(1)
	s.mu.Lock()
	s.reconnectAt = append(s.reconnectAt, at)
	s.mu.Unlock()
}

func (s *stats) gap(d time.Duration) {
	s.mu.Lock()
	s.longestGap = max(s.longestGap, d)
	s.mu.Unlock()
}

func (s *stats) latency(d time.Duration) {
	s.mu.Lock()
	s.hist.add(d)
	s.mu.Unlock()
}

// latencyHist counts delivery times in 1 ms buckets up to a minute.
type latencyHist struct {
	buckets [60_001]int64
	n       int64
	max     time.Duration
}

func (h *latencyHist) add(d time.Duration) {
	i := min(int(d/time.Millisecond), len(h.buckets)-1)
	h.buckets[max(i, 0)]++
	h.n++
	h.max = max(h.max, d)
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *latencyHist) quantile(q float64) time.Duration {
	want := int64(q * float64(h.n))
	var seen int64
	for i, c := range h.buckets {
		seen += c
		if seen > want {
			return time.Duration(i+1) * time.Millisecond
		}
	}
	return h.max
}
