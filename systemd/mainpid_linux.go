package systemd

import (
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// reclaimMainPID makes systemd treat this process, which took over from
// old, as a main process it can stop gracefully.
//
// systemd decides once, when MAINPID= names a process, whether it is its
// own child ("Main PID Alien" in systemd-analyze dump). A process that
// took over is named while its parent, the old process, still lives (it
// must be: an old process that exits first stops the unit), so systemd
// flags it alien for good, and then `systemctl stop` and the watchdog
// follow their SIGTERM with an immediate SIGKILL (systemd 252-255,
// unit_kill_context: no wait for an alien main process): no final save,
// and the unit ends failed. Once the old process has exited, this one is
// systemd's child; naming another of its tasks and then itself again
// makes systemd decide anew (naming the same pid again is ignored). The
// other task is one of this process's threads: it lives as long as
// needed, and sits in the same cgroup. This needs NotifyAccess=all, as
// the takeover does anyway: under NotifyAccess=main, systemd would take
// the second message from no process it knows.
func (s *Supervisor) reclaimMainPID(old int) {
	for deadline := time.Now().Add(time.Minute); os.Getppid() == old; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.log.Warn("systemd: the old process has not exited; systemctl stop will SIGKILL this one", "old", old)
			return
		}
	}
	done := make(chan struct{})
	defer close(done)
	pid := os.Getpid()
	t := otherThread(pid, done)
	if t == 0 {
		s.log.Warn("systemd: no thread to reclaim the main pid with; systemctl stop will SIGKILL this process")
		return
	}
	n, err := s.notifier()
	if err == nil {
		err = n.send("MAINPID=" + strconv.Itoa(t))
	}
	if err == nil {
		err = n.send("MAINPID=" + strconv.Itoa(pid))
	}
	if err == nil {
		err = s.barrier(2 * time.Second)
	}
	if err != nil {
		s.log.Warn("systemd: reclaiming the main pid", "err", err)
	}
}

// otherThread returns the id of a thread of this process other than the
// main one (whose id is pid), held by a goroutine until done is closed; 0
// if there is none. A goroutine that happens to hold the main thread keeps
// it, so that the next one runs elsewhere.
func otherThread(pid int, done <-chan struct{}) int {
	for i := 0; i < 2; i++ {
		tid := make(chan int)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tid <- unix.Gettid()
			<-done
		}()
		if t := <-tid; t != pid {
			return t
		}
	}
	return 0
}
