package loadcheck

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// maxDetails is how many error descriptions a run keeps; the counters
// keep counting past it.
const maxDetails = 20

// stats is the run-wide tally every connection writes into.
type stats struct {
	start time.Time
	lat   histogram

	sent, ok, mismatches, unexpected, missing atomic.Uint64
	stalled, dropped, lostInDrops, refused    atomic.Uint64
	churnOK, churnSkipped, statsOK, statsV1   atomic.Uint64
	finalOK, finalFailed, conns               atomic.Uint64
	maxStall                                  atomic.Int64

	mu       sync.Mutex
	details  []string
	versions map[string]uint64
	pids     map[int]struct{}
}

func newStats() *stats {
	return &stats{start: time.Now(), versions: map[string]uint64{}, pids: map[int]struct{}{}}
}

// fail counts one failure in c and keeps its description if there is room.
func (s *stats) fail(c *atomic.Uint64, format string, args ...any) {
	c.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.details) < maxDetails {
		at := time.Since(s.start).Truncate(time.Millisecond)
		s.details = append(s.details, fmt.Sprintf("+%v ", at)+fmt.Sprintf(format, args...))
	}
}

func (s *stats) sawVersion(version string, pid int) {
	s.mu.Lock()
	s.versions[version]++
	s.pids[pid] = struct{}{}
	s.mu.Unlock()
}

// failures is the number of counted faults of every kind.
func (s *stats) failures() uint64 {
	return s.mismatches.Load() + s.unexpected.Load() + s.missing.Load() + s.stalled.Load() +
		s.dropped.Load() + s.refused.Load() + s.finalFailed.Load()
}

// progress is the one-line summary written every Config.ReportEvery.
func (s *stats) progress() string {
	return fmt.Sprintf("loadcheck: t=%v sent=%d ok=%d failures=%d dropped=%d refused=%d churn_ok=%d p99=%v max_stall=%v",
		time.Since(s.start).Truncate(100*time.Millisecond), s.sent.Load(), s.ok.Load(), s.failures(),
		s.dropped.Load(), s.refused.Load(), s.churnOK.Load(), s.lat.quantile(0.99),
		time.Duration(s.maxStall.Load()))
}
