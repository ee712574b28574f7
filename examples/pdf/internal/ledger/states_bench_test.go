package ledger

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/handoff-dev/handoff/internal/proc"
	"github.com/handoff-dev/handoff/statefile"
)

// BenchmarkStateFile times writing and reading the pdf ledger as a state
// file at the sizes an operator might run, next to the floor of a load,
// copying the same bytes, and reports what the time alone hides: file
// bytes per account, and how much memory the operation takes on top of
// the state itself.
//
//	go -C examples test -run '^$' -bench BenchmarkStateFile -benchtime 3x -benchmem ./pdf/internal/ledger/
//
// Sub-benchmarks, per size (v3 is schema 3, the bulk layout an upgrade
// sends a new process that reads it; v2 and v1 are the gob schemas every
// pdf binary reads, written to disk):
//
//	encode/v3         States.SaveAs(Schema3) of a *V2 built by inserts, to
//	                  io.Discard: layout, framing, CRC
//	encode/v2         States.Save of the same *V2 (gob records)
//	save/v2           States.WriteFile: the above, plus the disk write, fsync
//	                  and rename the server pays on every snapshot
//	copy/v3           the floor: the schema 3 file's bytes copied into fresh
//	                  memory, as a new process has no other
//	copy/v3-warm      the same copy into memory already touched: what the
//	                  fresh copy pays to fault its pages in
//	readfile/v3       os.ReadFile of the schema 3 file (page cache to fresh
//	                  memory)
//	load/v3           States.ReadFile of the schema 3 file as schema 2
//	encode/v3-loaded  encode/v3 of the ledger load/v3 loads
//	load/v2           States.ReadFile of a schema 2 file as schema 2
//	load/v1-as-v2     States.ReadFile of a schema 1 file as schema 2: decode
//	                  into a *V1, then Up1to2, with both alive at the end
//
// The ratio of load/v3 to copy/v3 is the one issue 21 asks about; read
// both from one run.
//
// Metrics besides time: MB/s over the file's bytes; B/acct, the file size
// per account; file-B, the file size; state-MB, the Go heap held by the
// *V2 ledger (v1state-MB for the *V1 the migration case decodes first);
// peakRSS-MB, how far the process's resident set rose above where it stood
// before the operation, the worst of the iterations (Linux only). MB is
// 10^6 bytes, as in MB/s.
func BenchmarkStateFile(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"10k", 10_000}, {"100k", 100_000}, {"1M", 1_000_000}} {
		b.Run(size.name, func(b *testing.B) { benchStateFile(b, size.n) })
	}
}

func benchStateFile(b *testing.B, n int) {
	dir := b.TempDir()
	v3Path, v2Path, v1Path := filepath.Join(dir, "v3.state"), filepath.Join(dir, "v2.state"), filepath.Join(dir, "v1.state")

	v2, v2Heap := heapOf(func() any { return benchLedger(n) })
	v1, v1Heap := heapOf(func() any { return Down2to1(v2.(*V2)) })
	if err := statefile.WriteFile(v3Path, func(w io.Writer) error { return States.SaveAs(w, v2, Schema3, 1) }); err != nil {
		b.Fatal(err)
	}
	if err := States.WriteFile(v2Path, v2, 1); err != nil {
		b.Fatal(err)
	}
	if err := States.WriteFile(v1Path, v1, 1); err != nil {
		b.Fatal(err)
	}
	v1 = nil
	v3Size, v2Size, v1Size := fileSize(b, v3Path), fileSize(b, v2Path), fileSize(b, v1Path)

	// report comes after measure: b.Loop's first call resets the timer,
	// which drops metrics reported before it.
	report := func(b *testing.B, fileBytes int64) {
		b.SetBytes(fileBytes)
		b.ReportMetric(float64(fileBytes), "file-B")
		b.ReportMetric(float64(fileBytes)/float64(n), "B/acct")
		b.ReportMetric(float64(v2Heap)/1e6, "state-MB")
	}

	b.Run("encode/v3", func(b *testing.B) {
		measure(b, func() error { return States.SaveAs(io.Discard, v2, Schema3, 2) })
		report(b, v3Size)
	})
	b.Run("encode/v2", func(b *testing.B) {
		measure(b, func() error { return States.Save(io.Discard, v2, 2) })
		report(b, v2Size)
	})
	b.Run("save/v2", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "pdf.state")
		measure(b, func() error { return States.WriteFile(path, v2, 2) })
		report(b, v2Size)
	})

	// A process that loads its state does not hold another copy of it.
	// Keeping the source ledger alive would both misstate the baseline the
	// loads start from and give the garbage collector, which paces itself
	// on the live heap, twice the room it has in the server.
	v2 = nil

	// The floor of a load: the schema 3 file's bytes copied into fresh
	// memory (a new process has no other), and read from the page cache
	// into fresh memory, which a load from a file cannot do without.
	v3Bytes, err := os.ReadFile(v3Path)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("copy/v3", func(b *testing.B) {
		var dst []byte
		measure(b, func() error {
			dst = make([]byte, len(v3Bytes))
			copy(dst, v3Bytes)
			return nil
		})
		runtime.KeepAlive(dst)
		report(b, v3Size)
	})
	b.Run("copy/v3-warm", func(b *testing.B) {
		// The same copy into memory the process has already touched:
		// what the fresh copy pays for faulting its pages in.
		dst := make([]byte, len(v3Bytes))
		copy(dst, v3Bytes)
		measure(b, func() error {
			copy(dst, v3Bytes)
			return nil
		})
		report(b, v3Size)
	})
	b.Run("readfile/v3", func(b *testing.B) {
		measure(b, func() error {
			_, err := os.ReadFile(v3Path)
			return err
		})
		report(b, v3Size)
	})
	v3Bytes = nil

	b.Run("load/v3", func(b *testing.B) {
		measure(b, func() error { return loadCount(v3Path, n) })
		report(b, v3Size)
	})
	b.Run("encode/v3-loaded", func(b *testing.B) {
		// A ledger a process loaded holds its records in index order, so
		// its next encode reads them in sequence; one built by inserts
		// (encode/v3) reads them at random.
		loaded, _, err := States.ReadFile(v3Path, Schema2)
		if err != nil {
			b.Fatal(err)
		}
		measure(b, func() error { return States.SaveAs(io.Discard, loaded, Schema3, 2) })
		report(b, v3Size)
	})
	b.Run("load/v2", func(b *testing.B) {
		measure(b, func() error { return loadCount(v2Path, n) })
		report(b, v2Size)
	})
	b.Run("load/v1-as-v2", func(b *testing.B) {
		measure(b, func() error { return loadCount(v1Path, n) })
		report(b, v1Size)
		b.ReportMetric(float64(v1Heap)/1e6, "v1state-MB")
	})
}

// benchLedger returns a ledger of n accounts named like the server's
// ("acct-000123"), with zero and non-zero balances and charge counts
// mixed: gob leaves zero fields out, so an all-non-zero ledger would
// overstate the file and an all-zero one understate it.
func benchLedger(n int) *V2 {
	l := NewV2()
	for i := range n {
		acct := fmt.Sprintf("acct-%06d", i)
		if _, err := l.TopUp(acct, int64(i%1000+1)*100); err != nil {
			panic(err)
		}
		for range i % 3 { // charge counts 0, 1 or 2
			l.Charge(acct, 50)
		}
		if i%5 == 0 { // and one account in five is emptied: balance 0
			l.Charge(acct, l.Balance(acct))
		}
	}
	return l
}

// heapOf returns what build builds and the Go heap it holds: live heap
// after a full collection with it, minus before.
func heapOf(build func() any) (any, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(x)
	return x, after.HeapAlloc - before.HeapAlloc
}

// loadCount reads the state file at path as schema 2, the way the server
// starts, and checks that it holds n accounts, so that a benchmark of a
// load that quietly failed cannot look fast.
func loadCount(path string, n int) error {
	state, _, err := States.ReadFile(path, Schema2)
	if err != nil {
		return err
	}
	if got := state.(*V2).Len(); got != n {
		return fmt.Errorf("loaded %d accounts, want %d", got, n)
	}
	return nil
}

func fileSize(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

// measure runs op once per iteration under the timer and reports
// peakRSS-MB: the largest rise, over the iterations, of the resident set's
// high-water mark above the resident set just before op. Between
// iterations, off the timer, the previous iteration's garbage is returned
// to the kernel (debug.FreeOSMemory, not just runtime.GC: memory the Go
// heap freed but kept would let op grow the heap without touching new
// pages, hiding its cost) and the kernel's high-water mark is reset to the
// current RSS (writing 5 to /proc/self/clear_refs, Linux 4.0+). Where that
// is not possible the metric is left out rather than guessed.
func measure(b *testing.B, op func() error) {
	var peak int64
	measured := true
	for b.Loop() {
		b.StopTimer()
		base, ok := resetPeakRSS()
		measured = measured && ok
		b.StartTimer()

		if err := op(); err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		hwm, ok := procStatusBytes("VmHWM")
		measured = measured && ok
		peak = max(peak, hwm-base)
		b.StartTimer()
	}
	if measured {
		b.ReportMetric(float64(peak)/1e6, "peakRSS-MB")
	}
}

// resetPeakRSS frees what the Go heap no longer uses, resets the kernel's
// resident-set high-water mark (VmHWM) to the current resident set and
// returns that resident set (VmRSS) in bytes.
func resetPeakRSS() (int64, bool) {
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return 0, false
	}
	return procStatusBytes("VmRSS")
}

// procStatusBytes returns a "kB" field of this process's /proc status in bytes.
func procStatusBytes(field string) (int64, bool) {
	n, err := proc.StatusBytes(os.Getpid(), field)
	return n, err == nil
}
