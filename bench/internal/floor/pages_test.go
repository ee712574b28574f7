//go:build linux

package floor

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkFreshPage is what the first write to a page of memory the
// process has never used costs, per 4 KiB page: the part of a new
// process's cost per connection (a goroutine's stack and a read buffer,
// about two pages each) that no change of the library removes, and that
// the fd floor (net.FileConn alone) leaves out. On the VMs of bench/README
// (Firecracker, paravirtualized paging) the first touch is slow even after
// MADV_POPULATE_WRITE has mapped the page: "populated" is the madvise and
// then the write, each page timed whole.
//
//	go -C bench test ./internal/floor -run '^$' -bench FreshPage -count 5
func BenchmarkFreshPage(b *testing.B) {
	const chunk = 16 << 20 // mapped and unmapped whole: fresh every time
	for _, tc := range []struct {
		name   string
		advise []int // before the writes, after the mapping
	}{
		{"fault", nil},
		{"populated", []int{unix.MADV_POPULATE_WRITE}},
		{"hugepage", []int{unix.MADV_HUGEPAGE}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			page := 4096
			for done := 0; done < b.N; done += chunk / page {
				b.StopTimer()
				m, err := unix.Mmap(-1, 0, chunk+2<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
				if err != nil {
					b.Fatal(err)
				}
				mem := aligned2M(m)[:chunk]
				b.StartTimer()
				for _, a := range tc.advise {
					if err := unix.Madvise(mem, a); err != nil {
						b.Skipf("madvise %d: %v", a, err)
					}
				}
				for i := 0; i < len(mem) && done+i/page < b.N; i += page {
					mem[i] = 1
				}
				b.StopTimer()
				if err := unix.Munmap(m); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
	b.Run("again", func(b *testing.B) { // a page written before: the floor's floor
		m, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Munmap(m)
		for i := 0; i < len(m); i += 4096 {
			m[i] = 1
		}
		b.ResetTimer()
		for n := 0; n < b.N; n++ {
			m[(n*4096)%chunk]++
		}
	})
}

// aligned2M returns m from its first 2 MiB boundary on, where a huge page
// can start.
func aligned2M(m []byte) []byte {
	p := uintptr(unsafe.Pointer(&m[0]))
	return m[(2<<20-p%(2<<20))%(2<<20):]
}
