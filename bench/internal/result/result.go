// Package result holds what one benchmark run measured, in the form the
// JSON file under bench/results keeps, and renders it: a markdown table
// and a latency chart.
package result

import "time"

// Modes of upgrade compared by the benchmark, as the pdf server's
// -upgrade-mode flag names them, and none, the same load with no upgrade.
const (
	ModeFull = "full" // listeners, connections and state handed over, every conn parked at once
	// ModeFullNoPrecopy is ModeFull with pdf's -precopy=false: the whole
	// ledger moves in the pause, as before pre-copy (issue 21 item 5).
	ModeFullNoPrecopy = "full-noprecopy"
	ModeRolling       = "rolling"   // listeners and a snapshot, then each conn moves on its own with what it changed
	ModeListeners     = "listeners" // listeners inherited; old conns drained and closed; state from the snapshot
	ModeRestart       = "restart"   // stop, snapshot, start again
	// ModeNone sends no SIGHUP: the baseline the stalls of the others are
	// held against. It has no upgrade windows, so all its latencies are
	// outside one, and its longest stall is over the whole run.
	ModeNone = "none"
	// ModePlain is ModeNone on the server's -plain mode: the same protocol
	// without the handoff library (make bench-steady's baseline).
	ModePlain = "plain"
)

// Suite is one invocation of the benchmark: every mode at every scale.
type Suite struct {
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	Command string    `json:"command"`
	Rate    float64   `json:"rate_per_s"` // paced requests per second, all clients together
	Runs    []Run     `json:"runs"`
	Floors  []Floor   `json:"floors"` // one per scale
}

// Floor is the least this machine needs to move Conns connections from
// one process to another, measured on its own with no load running.
type Floor struct {
	Conns     int           `json:"conns"`
	Interrupt time.Duration `json:"interrupt_ns"` // wake every reader blocked in Read
	Pass      time.Duration `json:"pass_ns"`      // pass every fd and turn it into a net.Conn
	Convert   time.Duration `json:"convert_ns"`   // of Pass, the receiver's time in net.FileConn
	// Resume: send every parked record and resume every reader in the
	// receiver, each on the goroutine that waited for it.
	Resume time.Duration `json:"resume_ns"`
}

// Total is the fd floor: interrupt, then pass.
func (f Floor) Total() time.Duration { return f.Interrupt + f.Pass }

// Pause is the pause floor: interrupt, then records and resume.
func (f Floor) Pause() time.Duration { return f.Interrupt + f.Resume }

// Machine says where the figures come from.
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Run is one mode at one scale.
type Run struct {
	Mode  string `json:"mode"`
	Conns int    `json:"conns"`
	// Accounts is how many accounts the ledger held before the clients
	// started (upgradebench -accounts): the state an upgrade moves.
	Accounts int `json:"accounts,omitempty"`

	Upgrades []Upgrade `json:"upgrades,omitempty"` // none for ModeNone

	// Connection survival, summed over the upgrades.
	ConnsSurvived int `json:"conns_survived"` // persistent conns that saw every upgrade without a drop
	ConnsDropped  int `json:"conns_dropped"`  // closed or reset by the server

	Requests   uint64 `json:"requests"`   // sent
	Lost       uint64 `json:"lost"`       // never answered
	Duplicated uint64 `json:"duplicated"` // answered twice
	Failed     uint64 `json:"failed"`     // answered wrong (state lost) or with an error
	Refused    uint64 `json:"refused"`    // new connections refused
	Reset      uint64 `json:"reset"`      // new connections reset

	// Latency of the replies, inside upgrade windows and outside them.
	// A run without upgrades (ModeNone) has no InWindow.
	InWindow  Latency `json:"in_window,omitzero"`
	OutWindow Latency `json:"out_window"`
	// MaxStall is the longest any one request waited past its due time,
	// over the whole run, in an upgrade window or not.
	MaxStall time.Duration `json:"max_stall_ns"`

	// Floor is this machine's time, measured in the same run, to interrupt
	// Conns readers, pass Conns fds and turn them into connections.
	Floor time.Duration `json:"floor_ns"`
	// PauseFloor is its time to interrupt Conns readers, send their
	// parked records and resume them in another process (Floor.Pause).
	PauseFloor time.Duration `json:"pause_floor_ns"`
	// Pause is the longest park-to-resume pause of an upgrade; none in
	// rolling mode, which pauses no connection for the others.
	Pause time.Duration `json:"pause_ns"`
	// PauseResumed is the longest pause plus the new process's resume
	// (COMMIT to every handler back at work), which PauseFloor is the
	// floor of; none if the new process did not log its resume.
	PauseResumed time.Duration `json:"pause_resumed_ns"`

	// ServerCPUPerReq is the server's CPU time per request before the
	// first upgrade: after a pause, every connection's waiting requests are
	// served at about this cost each.
	ServerCPUPerReq time.Duration `json:"server_cpu_per_req_ns"`

	RSSBefore int64 `json:"rss_before"` // server resident set, bytes
	RSSAfter  int64 `json:"rss_after"`
	FdsBefore int   `json:"fds_before"` // server open fds
	FdsAfter  int   `json:"fds_after"`

	// Timeline is the request latency over time for the chart: one point
	// per time bucket, the worst reply latency that bucket saw.
	Timeline []Point `json:"timeline"`
}

// Upgrade is one SIGHUP.
type Upgrade struct {
	At       time.Duration `json:"at_ns"`       // since the start of the run
	Duration time.Duration `json:"duration_ns"` // SIGHUP to the old process's exit
	OK       bool          `json:"ok"`
	// Phases as the handoff logs them: connected (to the new process's
	// HELLO), fds (early, before the pause), then the pause: park, parked,
	// state, ready, commit. Listeners mode logs connected, ready and commit; rolling
	// mode move (from the commit to the last connection moved) and
	// max_wait (the longest a parked connection waited until the new
	// process had taken it up). The new process logs resume (COMMIT to
	// every handler at work again) of an all-at-once upgrade.
	Phases map[string]time.Duration `json:"phases_ns,omitempty"`
	// The serving process's resident set just before the SIGHUP, and the
	// new process's once the old one has exited (the takeover done), in
	// bytes; 0 where not measured.
	RSSOld int64 `json:"rss_old,omitempty"`
	RSSNew int64 `json:"rss_new,omitempty"`
}

// Latency summarises reply latencies.
type Latency struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Point is one bucket of the timeline.
type Point struct {
	At    time.Duration `json:"at_ns"`    // bucket start, since the start of the run
	Worst time.Duration `json:"worst_ns"` // worst latency of a reply sent in the bucket
	P99   time.Duration `json:"p99_ns"`
}
