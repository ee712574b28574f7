// Package demo runs the PDF live-upgrade scenario end to end: a real
// server process, real client sockets under load, and a chain of upgrades
// (v1→v2 by SIGHUP; v2→v2 and one that must fail and roll back through
// handoffctl upgrade on the control socket, as an operator would; v2→v1 by
// SIGHUP), then reports whether every connection, request and balance came
// through, and whether the counters on /metrics continued across each
// handoffctl upgrade.
//
// Minimal use:
//
//	res, err := demo.Run(ctx, demo.Config{BinDir: "bin"}, os.Stdout)
//	if err != nil {
//		log.Fatal(err) // the scenario could not be carried out
//	}
//	if !res.OK() {
//		os.Exit(1)
//	}
//
// Operational notes: BinDir must hold pdf-v1, pdf-v2 and handoffctl built
// for this machine. The server gets a control socket in the work directory
// and serves /metrics on a free port of 127.0.0.1. The server runs in its own process group from a copy of the
// binary in a work directory, so the binaries in BinDir are never touched;
// Run stops the whole group before it returns. A work directory Run made
// itself is removed after a pass and kept, with server.log, after a failure.
//
// Each server must serve long enough for every persistent connection to
// ask it VERSION, since that is the only way a connection learns which
// process answered it; see MinSettle.
package demo
