package loadcheck

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits sets the precision of the histogram: 2^subBits buckets per power
// of two keep every recorded value within ~3% while the whole histogram
// stays a fixed 15 KiB, however many millions of samples it sees.
const subBits = 5

const numBuckets = (64 - subBits + 1) << subBits

// histogram is a log-bucketed latency histogram safe for concurrent use.
// One shared instance beats per-connection copies: at 15k connections
// those would cost hundreds of MiB.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)<<subBits + int(v>>shift) - 1<<subBits
}

// bucketLow is the smallest value that falls in bucket i.
func bucketLow(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	e := i >> subBits
	m := uint64(i&(1<<subBits-1)) + 1<<subBits
	return m << (e - 1)
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))].Add(1)
	h.n.Add(1)
	storeMax(&h.max, int64(d))
}

// quantile returns the value below which a fraction q of samples fall,
// reported as the middle of its bucket and never above the exact max.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			mid := (bucketLow(i) + bucketLow(i+1)) / 2
			return min(time.Duration(mid), time.Duration(h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}
