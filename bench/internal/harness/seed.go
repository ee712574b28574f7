package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/handoff-dev/handoff/bench/internal/load"
)

// seedConns is how many connections fill the ledger, each pipelining its
// share of the top-ups.
const seedConns = 4

// seed fills the server's ledger with n accounts (seed-0 … seed-<n-1>, a
// balance of 1 to 1000 each) through the protocol, before the clients
// start: the state an upgrade then moves besides the clients' own
// accounts. Every reply must be the OK of its top-up.
func seed(addr string, n int) error {
	var wg sync.WaitGroup
	errs := make([]error, seedConns)
	for c := range seedConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[c] = seedRange(addr, c, n, seedConns)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// seedRange tops up accounts first, first+step, … below n on one
// connection: a writer ahead, and the replies checked as they come.
func seedRange(addr string, first, n, step int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("harness: seed: %w", err)
	}
	defer c.Close()
	werr := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		var b []byte
		for i := first; i < n; i += step {
			b = load.AppendTopUp(b[:0], i, "seed-"+strconv.Itoa(i), seedBalance(i))
			w.Write(b)
		}
		werr <- w.Flush()
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	var want []byte
	for i := first; i < n; i += step {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("harness: seed: reply to top-up %d: %w", i, err)
		}
		want = fmt.Appendf(want[:0], "OK %d %d\n", i, seedBalance(i))
		if !bytes.Equal(line, want) {
			return fmt.Errorf("harness: seed: top-up %d answered %q", i, line)
		}
	}
	return <-werr
}

func seedBalance(i int) int64 { return int64(i%1000 + 1) }
