package demo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/loadcheck"
)

// load is a loadcheck run in the background.
type load struct {
	cancel  context.CancelFunc
	started *firstWrite
	done    chan struct{}
	rep     loadcheck.Report
	err     error
}

// startLoad starts the load and returns once every persistent connection
// has been dialled, so that each of them meets every upgrade.
func startLoad(ctx context.Context, cfg Config) (*load, error) {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel, started: &firstWrite{c: make(chan struct{})}, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.rep, l.err = loadcheck.Run(ctx, loadcheck.Config{
			Addr: cfg.Addr, Conns: cfg.Conns, Rate: cfg.Rate, Churn: cfg.Churn,
			// loadcheck writes its first progress line only after dialling
			// every persistent connection: that is the signal to wait for.
			Progress: l.started, ReportEvery: 100 * time.Millisecond,
		})
	}()
	select {
	case <-l.started.c:
		return l, nil
	case <-l.done:
		err := l.err
		if err == nil {
			err = errors.New("ended before it began")
		}
		return nil, fmt.Errorf("demo: load: %w", err)
	}
}

// stop ends the load and returns its report, once loadcheck has drained
// every connection and run its final check.
func (l *load) stop() loadcheck.Report {
	l.cancel()
	<-l.done
	return l.rep
}

// firstWrite closes c at its first write and discards everything.
type firstWrite struct {
	once sync.Once
	c    chan struct{}
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.c) })
	return len(p), nil
}
