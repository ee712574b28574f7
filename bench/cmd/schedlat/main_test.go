package main

import (
	"bytes"
	"runtime/trace"
	"strings"
	"testing"
)

// A goroutine made runnable (at its start, and when a channel send wakes
// it, if it had blocked by then) waits before it runs; its waits are
// counted under the function its stack names, and a function no
// goroutine runs has none.
func TestLatencies(t *testing.T) {
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	wake, done := make(chan struct{}), make(chan struct{})
	go schedlatWaiter(wake, done)
	for range 10 {
		wake <- struct{}{}
	}
	close(wake)
	<-done
	trace.Stop()

	lat, err := latencies(&buf, []string{"schedlatWaiter", "noSuchFunction"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(lat["schedlatWaiter"]); n < 1 || n > 11 {
		t.Fatalf("%d waits of the waiter, want its start and up to its 10 wake-ups", n)
	}
	if n := len(lat["noSuchFunction"]); n != 0 {
		t.Fatalf("%d waits for a function no goroutine runs", n)
	}
	if s := summary("schedlatWaiter", lat["schedlatWaiter"]); !strings.HasPrefix(s, "schedlatWaiter: ") || !strings.Contains(s, " waits, mean ") {
		t.Fatalf("summary %q", s)
	}
	if s := summary("x", nil); s != "x: no waits" {
		t.Fatalf("summary of nothing: %q", s)
	}
}

func schedlatWaiter(wake <-chan struct{}, done chan<- struct{}) {
	for range wake {
	}
	close(done)
}
