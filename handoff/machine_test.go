package handoff

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
)

// testMachine is a machine whose notices are recorded.
type testMachine struct {
	*machine
	nmu     sync.Mutex
	notices []NoticeEvent
}

// machineSetup is a machine brought to a phase, with the attempt in
// progress there, if any.
type machineSetup struct {
	m   *testMachine
	ctx context.Context
	run *attempt
}

func newTestMachine() *testMachine {
	t := &testMachine{}
	t.machine = newMachine(slog.New(slog.NewTextHandler(io.Discard, nil)), func(n Notice) {
		t.nmu.Lock()
		t.notices = append(t.notices, n.Event)
		t.nmu.Unlock()
	})
	return t
}

func (t *testMachine) phaseNow() stage {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stage
}

// stopAsync runs stop on a goroutine; the channel gets its result.
func (t *testMachine) stopAsync() <-chan bool {
	c := make(chan bool, 1)
	go func() { c <- t.stop() }()
	return c
}

// TestMachineStopInEachPhase walks the machine's table: what Stop does,
// and what it returns, in each phase, and how an upgrade request is
// refused there.
func TestMachineStopInEachPhase(t *testing.T) {
	cases := []struct {
		name    string
		enter   func(t *testing.T) machineSetup
		refusal error // what an upgrade request gets in the phase
		// resolve ends the attempt the stop waits for, if any; it gets
		// the stop's result channel, to check that the stop is waiting.
		resolve func(t *testing.T, s machineSetup, stopped <-chan bool)
		handed  bool  // Stop's result
		want    stage // after Stop
	}{
		{name: "starting", refusal: ErrNotReady, want: phaseStopped,
			enter: func(t *testing.T) machineSetup { return machineSetup{m: newTestMachine()} }},
		{name: "takingOver", refusal: ErrNotReady, want: phaseStopped,
			enter: takingOver,
			resolve: func(t *testing.T, s machineSetup, stopped <-chan bool) {
				<-s.ctx.Done() // the takeover is aborted
				if !errors.Is(context.Cause(s.ctx), errStopping) {
					t.Errorf("takeover cancelled by %v, want errStopping", context.Cause(s.ctx))
				}
				requireWaiting(t, stopped)
				s.m.end(s.run, phaseStopped, nil)
			}},
		{name: "awaitingCommit", refusal: ErrNotReady, want: phaseStopped,
			enter: func(t *testing.T) machineSetup {
				s := takingOver(t)
				if err := s.m.commit(s.ctx, 0); err != nil {
					t.Fatal(err)
				}
				return s
			},
			resolve: func(t *testing.T, s machineSetup, stopped <-chan bool) {
				<-s.run.stopC
				if s.ctx.Err() != nil {
					t.Error("a takeover past its commit was cancelled by a stop")
				}
				requireWaiting(t, stopped)
				s.m.end(s.run, phaseServing, nil) // the old process committed
			}},
		{name: "serving", want: phaseStopped, enter: serving},
		{name: "receiving", refusal: ErrUpgradeInProgress, want: phaseStopped,
			enter: func(t *testing.T) machineSetup {
				s := takingOver(t)
				if err := s.m.commit(s.ctx, 0); err != nil {
					t.Fatal(err)
				}
				s.m.receivingMove()
				s.m.end(s.run, phaseReceiving, nil)
				return machineSetup{m: s.m}
			},
			resolve: func(t *testing.T, s machineSetup, stopped <-chan bool) {
				requireWaiting(t, stopped)
				s.m.moveReceived()
			}},
		{name: "upgrading", refusal: ErrUpgradeInProgress, want: phaseStopped,
			enter: upgrading,
			resolve: func(t *testing.T, s machineSetup, stopped <-chan bool) {
				<-s.ctx.Done() // rolled back
				requireWaiting(t, stopped)
				s.m.end(s.run, phaseServing, &UpgradeResult{Err: context.Cause(s.ctx)})
			}},
		{name: "committed", refusal: ErrUpgradeInProgress, handed: true, want: phaseHandedOver,
			enter: func(t *testing.T) machineSetup {
				s := upgrading(t)
				if err := s.m.commit(s.ctx, 42); err != nil {
					t.Fatal(err)
				}
				return s
			},
			resolve: func(t *testing.T, s machineSetup, stopped <-chan bool) {
				<-s.run.stopC // a Rolling move hurries
				if s.ctx.Err() != nil {
					t.Error("an upgrade past its commit was cancelled by a stop")
				}
				requireWaiting(t, stopped)
				s.m.end(s.run, phaseHandedOver, &UpgradeResult{Committed: true})
			}},
		{name: "handedOver", refusal: ErrHandedOver, handed: true, want: phaseHandedOver,
			enter: func(t *testing.T) machineSetup {
				s := upgrading(t)
				if err := s.m.commit(s.ctx, 42); err != nil {
					t.Fatal(err)
				}
				s.m.end(s.run, phaseHandedOver, &UpgradeResult{Committed: true})
				return machineSetup{m: s.m}
			}},
		{name: "stopped", refusal: ErrStopped, want: phaseStopped,
			enter: func(t *testing.T) machineSetup {
				s := serving(t)
				s.m.stop()
				return s
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.enter(t)
			if _, _, err := s.m.beginUpgrade(context.Background()); !errors.Is(err, tc.refusal) || (err == nil) != (tc.refusal == nil) {
				t.Fatalf("upgrade request: %v, want %v", err, tc.refusal)
			}
			if tc.refusal == nil {
				return // serving: the upgrade started; its own case follows
			}
			stopped := s.m.stopAsync()
			if tc.resolve != nil {
				tc.resolve(t, s, stopped)
			}
			if handed := <-stopped; handed != tc.handed {
				t.Errorf("Stop: handed over %v, want %v", handed, tc.handed)
			}
			if got := s.m.phaseNow(); got != tc.want {
				t.Errorf("after Stop: phase %d, want %d", got, tc.want)
			}
		})
	}
}

// TestMachineStopWhileServing: a process that serves stops at once and
// tells its supervisor; an upgrade is refused from then on.
func TestMachineStopWhileServing(t *testing.T) {
	s := serving(t)
	if handed := s.m.stop(); handed {
		t.Fatal("Stop of a serving process says handed over")
	}
	if _, _, err := s.m.beginUpgrade(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("upgrade after Stop: %v, want ErrStopped", err)
	}
	s.m.nmu.Lock()
	defer s.m.nmu.Unlock()
	if len(s.m.notices) != 1 || s.m.notices[0] != NoticeStopping {
		t.Fatalf("notices %v, want [stopping]", s.m.notices)
	}
}

// TestMachineCommitAfterStop: Stop before the commit point wins: the
// commit fails with the stop as its cause.
func TestMachineCommitAfterStop(t *testing.T) {
	s := upgrading(t)
	stopped := s.m.stopAsync()
	<-s.ctx.Done()
	if err := s.m.commit(s.ctx, 42); !errors.Is(err, errStopping) {
		t.Fatalf("commit after Stop: %v, want errStopping", err)
	}
	s.m.end(s.run, phaseServing, &UpgradeResult{Err: errStopping})
	if <-stopped {
		t.Fatal("Stop says handed over after a rollback")
	}
}

func takingOver(t *testing.T) machineSetup {
	m := newTestMachine()
	ctx, run, err := m.beginTakeover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return machineSetup{m, ctx, run}
}

func serving(t *testing.T) machineSetup {
	m := newTestMachine()
	m.ready()
	return machineSetup{m: m}
}

func upgrading(t *testing.T) machineSetup {
	s := serving(t)
	ctx, run, err := s.m.beginUpgrade(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return machineSetup{s.m, ctx, run}
}

// requireWaiting checks that Stop has not returned: it cannot before the
// attempt it waits for ends, which the caller has not done yet.
func requireWaiting(t *testing.T, stopped <-chan bool) {
	t.Helper()
	select {
	case <-stopped:
		t.Fatal("Stop returned before the attempt it waits for ended")
	default:
	}
}
