package app

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"sync"
	"time"
)

// envProfileDir names a directory where the server writes CPU profiles,
// execution traces and heap profiles of its upgrades (bench/README.md,
// "Where the time goes"): the old process's from SIGHUP to its exit, the
// new process's from its start until its parent has exited (the takeover
// done), and a heap profile of each at those two moments. Unset, nothing
// is profiled. For benchmarks only: a CPU profile and a trace slow a
// process down.
const envProfileDir = "PDF_PROFILE_DIR"

// profiler is the running profile of an upgrade, at most one at a time
// (the runtime allows one CPU profile per process).
type profiler struct {
	dir  string
	log  *slog.Logger
	mu   sync.Mutex
	role string // of the running profile
	end  func() // stops the running profile; nil if none runs
}

// newProfiler returns nil unless envProfileDir is set.
func newProfiler(log *slog.Logger) *profiler {
	dir := os.Getenv(envProfileDir)
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Error("profiles not written", "err", err)
		return nil
	}
	return &profiler{dir: dir, log: log}
}

// name is the path of one output: role, pid and time, so that the
// processes of a chain never overwrite each other's files.
func (p *profiler) name(role, ext string) string {
	return filepath.Join(p.dir, fmt.Sprintf("%s-%d-%s.%s", role, os.Getpid(), time.Now().UTC().Format("150405.000"), ext))
}

// start begins a CPU profile and a trace for role, ending a running one.
func (p *profiler) start(role string) {
	if p == nil {
		return
	}
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	cpu, err := os.Create(p.name(role, "cpu.pprof"))
	if err != nil {
		p.log.Error("profile", "err", err)
		return
	}
	tr, err := os.Create(p.name(role, "trace"))
	if err != nil {
		cpu.Close()
		p.log.Error("profile", "err", err)
		return
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		p.log.Error("profile", "err", err)
	}
	if err := trace.Start(tr); err != nil {
		p.log.Error("trace", "err", err)
	}
	p.role = role
	p.end = func() {
		trace.Stop()
		pprof.StopCPUProfile()
		tr.Close()
		cpu.Close()
	}
}

// stop ends the running profile, if any.
func (p *profiler) stop() { p.stopRole("") }

// stopRole ends the running profile if it is role's (any, for "").
func (p *profiler) stopRole(role string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end != nil && (role == "" || role == p.role) {
		p.end()
		p.end = nil
	}
}

// heap writes a heap profile for role, after a GC if gc, and logs the
// process's RSS beside it.
func (p *profiler) heap(role string, gc bool) {
	if p == nil {
		return
	}
	if gc {
		runtime.GC()
	}
	f, err := os.Create(p.name(role, "heap.pprof"))
	if err != nil {
		p.log.Error("heap profile", "err", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		p.log.Error("heap profile", "err", err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.log.Info("profile: heap", "role", role, "rss", rss(), "heap_inuse", ms.HeapInuse, "heap_sys", ms.HeapSys,
		"stack_inuse", ms.StackInuse, "goroutines", runtime.NumGoroutine())
}

// untilParentExits profiles a new process until its parent (the old
// process) has exited, at most limit, then writes its heap profile.
func (p *profiler) untilParentExits(limit time.Duration) {
	if p == nil {
		return
	}
	parent := os.Getppid()
	go func() {
		for deadline := time.Now().Add(limit); os.Getppid() == parent && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		p.stopRole("start") // not the profile of an upgrade of its own, begun since
		p.heap("new-after-takeover", true)
	}()
}

// rss is VmRSS from /proc/self/status, as written there ("123456 kB").
func rss() string {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
