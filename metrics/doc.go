// Package metrics exports a handoff.Upgrader's state to Prometheus, makes
// counters continue across upgrades, and answers a load balancer's health
// checks.
//
// An embedding server registers the collector in one line, before Ready,
// and serves Handler on a listener from Upgrader.ListenPlain, so that the
// endpoint survives upgrades with the listeners:
//
//	up, _ := handoff.New(opts)
//	reg := prometheus.NewRegistry()
//	col := metrics.NewCollector(up) // before Ready: it registers Carry callbacks
//	reg.MustRegister(col)
//	metrics.Continue(up, "requests", requests) // the application's own counters
//	ln, _ := up.ListenPlain("tcp", ":9100")
//	_ = up.Ready(ctx)
//	go http.Serve(ln, metrics.Handler(up, reg))
//
// Serve the handler after Ready returns: before that, in a process started
// by an upgrade, the listener is shared with the old process, and a scrape
// could reach either one.
//
// # Metrics
//
//	handoff_upgrades_total{result="committed"|"rolled_back"}  counter, the chain's
//	handoff_rollbacks_total{cause=...}                         counter, by handoff.Cause*
//	handoff_upgrade_phase_seconds{phase=...}                   histogram of committed upgrades
//	handoff_connections_handed_over_total                      counter, the chain's
//	handoff_state_bytes                                        gauge, this process's last upgrade
//	handoff_generation                                         gauge, upgrades before this process
//	handoff_info{version=...}                                  gauge, always 1
//	handoff_serving                                            gauge, 1 if it should get traffic
//
// For a TLS server of package tlshandoff, package tlsmetrics adds how
// many connections could move and how many stayed to drain.
//
// Every counter continues across upgrades: the new process starts from the
// old one's values, so rate() and increase() see no reset at an upgrade.
// The library carries its own totals; the phase histogram and the
// application's counters (Continue, ContinueVec) travel through
// Upgrader.Carry.
//
// The phases are connected, fds, park, parked, state, ready, commit and
// pause: the library's names (handoff.Phases, the fields of
// handoff.UpgradeStats, the phases of handoff.Event and of the control
// socket). Until the library named each phase once, two of these labels
// were start (now connected) and adopt (now ready): a dashboard that
// selects them must select the new ones, whose histograms start from 0 at
// the first upgrade to a version with the new names (the old process
// carries them under the old names, which the new one does not register).
// Pause is 0 for a Rolling upgrade, which pauses no connection for the
// others (each waits for its own move only).
//
// The histogram carried to a new process is read before the upgrade
// commits; the new process adds that upgrade's phases itself, as the old
// process timed them (Status().TakenOver, which COMMIT brings), whatever
// triggered it (SIGHUP, Upgrade, the control socket). The old process adds
// them too, for the scrapes it answers before it exits.
//
// # Health checks
//
// Handler answers:
//
//   - /alive: 200 whenever the process answers at all. A failing /alive
//     means the process is hung or gone: restart it.
//   - /ready: 200 "ready" only while Upgrader.Serving is true; otherwise 503
//     with the phase as a one-word reason: "starting" (Ready has not
//     returned), "upgrading" (this process is handing over, or rolling
//     back: its connections may be parked), "handed-over" (a successor
//     serves; this process exits soon) or "stopped".
//
// During an upgrade a load balancer sees the old process's /ready turn 503
// ("upgrading") for the length of the handover. If the upgrade rolls back,
// the same process (same Handoff-Pid header) answers 200 again. If it
// commits, the new process takes the listening socket over and answers 200
// from then on; the old one may answer 503 ("handed-over") on a connection
// opened before the commit, until it exits. The service's address never
// stops accepting: treat a short 503 on /ready as "do not send new work
// for a moment", not as "remove the backend" — /alive says whether it is
// gone. Every response carries the answering pid in a Handoff-Pid header.
package metrics
