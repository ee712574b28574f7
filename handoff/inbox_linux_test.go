package handoff

import (
	"runtime"
	"strings"
	"sync"
	"testing"
)

// TestWaitDeepStack checks the stack an adopted connection's goroutine
// waits with: grown past the first 2 KiB, so that the handler's first calls
// after COMMIT do not fault its pages in, and no larger than the 4 KiB a
// handler blocked in Read has in the process that accepted it (pdf's:
// 62 MB of stacks for 15,000 of them). 8 KiB each made the new process
// 1.3x the old one's RSS at 15k connections (bench/README.md).
func TestWaitDeepStack(t *testing.T) {
	const n = 4000
	gate := make(chan struct{})
	var started, done sync.WaitGroup
	// Other tests' goroutines that end meanwhile free their stacks, which
	// StackInuse counts too: let them end and be collected first, and
	// poll without allocating (a GC would free more).
	runtime.GC()
	buf := make([]byte, 64<<20)
	before := stackInuse()
	started.Add(n)
	done.Add(n)
	for range n {
		go func() {
			defer done.Done()
			started.Done()
			waitDeep(gate)
		}()
	}
	started.Wait()
	// Every goroutine is in waitDeep or about to be: wait until all are
	// parked on the gate.
	for waitingOnGate(buf) < n {
		runtime.Gosched()
	}
	per := (stackInuse() - before) / n
	close(gate)
	done.Wait()
	if per < 3<<10 || per > 6<<10 {
		t.Fatalf("a goroutine waiting in waitDeep has a stack of about %d bytes, want 4096", per)
	}
}

func stackInuse() int {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int(ms.StackInuse)
}

// waitingOnGate counts the goroutines blocked in waitDeep.
func waitingOnGate(buf []byte) int {
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "handoff.waitDeep(")
}
