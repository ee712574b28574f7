// Command schedlat reads a Go execution trace (runtime/trace; upgradebench
// -profile keeps one per process and upgrade) and prints, for the
// goroutines whose stack names one of the functions given, how long each
// waited runnable before it ran: the Go scheduler's latency, which a
// rolling move's round trips cross four times (bench/README.md).
//
//	schedlat TRACE FUNC...
//
// A FUNC matches a stack frame whose function name contains it, as
// "receiveMoves" matches handoff's (*arrivals).receiveMoves. A goroutine
// counts for the first FUNC its stack names, from the first event that
// shows its stack.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: schedlat TRACE FUNC...")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedlat:", err)
		os.Exit(1)
	}
	defer f.Close()
	lat, err := latencies(f, os.Args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedlat:", err)
		os.Exit(1)
	}
	for _, fn := range os.Args[2:] {
		fmt.Println(summary(fn, lat[fn]))
	}
}

// latencies returns, by FUNC, every wait of a matching goroutine from
// runnable to running.
func latencies(r io.Reader, funcs []string) (map[string][]time.Duration, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	named := map[trace.GoID]string{} // "" once its stack matched none
	since := map[trace.GoID]trace.Time{}
	lat := map[string][]time.Duration{}
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			return lat, nil
		}
		if err != nil {
			return nil, err
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		if _, seen := named[id]; !seen && st.Stack != trace.NoStack {
			named[id] = match(st.Stack, funcs)
		}
		from, to := st.Goroutine()
		switch {
		case to == trace.GoRunnable:
			since[id] = ev.Time()
		case from == trace.GoRunnable && to == trace.GoRunning:
			if t, ok := since[id]; ok && named[id] != "" {
				lat[named[id]] = append(lat[named[id]], ev.Time().Sub(t))
			}
			delete(since, id)
		}
	}
}

// match returns the first of funcs that a frame of s names, or "".
func match(s trace.Stack, funcs []string) string {
	for _, fn := range funcs {
		for fr := range s.Frames() {
			if strings.Contains(fr.Func, fn) {
				return fn
			}
		}
	}
	return ""
}

// summary is one line: how many waits, their mean, quantiles and longest.
func summary(fn string, ls []time.Duration) string {
	if len(ls) == 0 {
		return fmt.Sprintf("%s: no waits", fn)
	}
	ls = slices.Clone(ls)
	slices.Sort(ls)
	var sum time.Duration
	for _, l := range ls {
		sum += l
	}
	q := func(p float64) time.Duration { return ls[int(p*float64(len(ls)-1))] }
	return fmt.Sprintf("%s: %d waits, mean %v, p50 %v, p90 %v, p99 %v, longest %v", fn, len(ls),
		(sum / time.Duration(len(ls))).Round(time.Microsecond), q(.5).Round(time.Microsecond),
		q(.9).Round(time.Microsecond), q(.99).Round(time.Microsecond), ls[len(ls)-1].Round(time.Microsecond))
}
