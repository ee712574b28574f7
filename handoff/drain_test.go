//go:build linux

package handoff

import (
	"context"
	"errors"
	"log"
	"strings"
	"testing"
	"time"
)

// drainer is an Upgrader with nothing but its registry: all that Drain and
// Conns read.
func drainer() (*Upgrader, *registry) {
	r := newRegistry(DefaultMaxBuffered)
	return &Upgrader{core: &core{reg: r}}, r
}

// drainAsync runs Drain on its own goroutine.
func drainAsync(u *Upgrader, ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- u.Drain(ctx) }()
	return done
}

// TestDrainNone: with no connection, Drain returns nil at once, even with
// a context that has ended.
func TestDrainNone(t *testing.T) {
	u, _ := drainer()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := u.Drain(ctx); err != nil {
		t.Fatalf("Drain with no connection: %v, want nil", err)
	}
}

// TestDrainClosed: Drain returns nil once the last connection is closed,
// and not while one is open.
func TestDrainClosed(t *testing.T) {
	u, r := drainer()
	nc1, _ := tcpPair(t)
	nc2, _ := tcpPair(t)
	c1, c2 := r.track(nc1, "test", nil), r.track(nc2, "test", nil)
	done := drainAsync(u, context.Background())
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	// One is left: a Drain whose context has ended says so.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := u.Drain(ended); err == nil || !strings.Contains(err.Error(), "1 connections still open") {
		t.Fatalf("Drain with one connection open and ctx ended: %v, want 1 still open", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Drain returned %v with a connection open", err)
	default:
	}
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := await(t, done, "Drain"); err != nil {
		t.Fatalf("Drain after the last close: %v, want nil", err)
	}
}

// TestDrainContext: when ctx ends first, Drain's error wraps ctx's, and
// the connections are still open and listed: Drain closes nothing.
func TestDrainContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		want error
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"cancel", context.Canceled, func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}},
		{"deadline", context.DeadlineExceeded, func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), aLongTimeAgo)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, r := drainer()
			nc, p := tcpPair(t)
			c := r.track(nc, "test", nil)
			e := serveEcho(c, "s", false)
			ctx, cancel := tc.ctx()
			done := drainAsync(u, ctx)
			cancel()
			err := await(t, done, "Drain")
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "1 connections still open") {
				t.Fatalf("Drain: %v, want %v with 1 still open", err, tc.want)
			}
			if got := u.Conns(); len(got) != 1 || got[0] != c {
				t.Fatalf("Conns after Drain: %v, want the one connection", got)
			}
			p.send(t, "still\n")
			if got := p.line(t); got != "still" {
				t.Fatalf("echo after Drain: %q, want %q", got, "still")
			}
			_ = c.Close()
			await(t, e.done, "handler")
		})
	}
}

// TestDrainHandedOver: a connection handed over to the new process is no
// longer this process's: Drain does not wait for it.
func TestDrainHandedOver(t *testing.T) {
	u, r := drainer()
	nc, _ := tcpPair(t)
	c := r.track(nc, "test", nil)
	e := serveEcho(c, "s", false)
	done := drainAsync(u, context.Background())
	parked := parkAll(t, r)
	adopt(t, c)
	endUpgrade(r, "handover", parked)
	if err := await(t, done, "Drain"); err != nil {
		t.Fatalf("Drain after a handover: %v, want nil", err)
	}
	await(t, e.done, "handler")
}

// A server in ListenersOnly mode lets the clients it still serves after a
// handover finish for at most 10 s, then closes the rest; they reconnect
// to the new process.
func ExampleUpgrader_Drain() {
	up, err := New(Options{Mode: ListenersOnly})
	if err != nil {
		log.Fatal(err)
	}
	// ... Listen, Ready, serve ...
	<-up.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := up.Drain(ctx); err != nil {
		log.Print(err) // "handoff: drain: 3 connections still open: context deadline exceeded"
		for _, c := range up.Conns() {
			_ = c.Close()
		}
	}
	up.Exiting()
}
