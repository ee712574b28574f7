// Package loadcheck drives a pdf server with paced, pipelined gateway
// traffic and checks every reply against a client-side model.
//
// Each persistent connection owns its accounts, so the client alone knows
// the exact reply every request must get: balances, DENY on insufficient
// funds, WHOAMI counters and STATS charge counts. Any reply that differs,
// arrives twice, never arrives, or a connection the server closes, is a
// failure. That makes the package a correctness probe for live upgrades:
// run it across a SIGHUP and a passing Report proves no connection was
// dropped, no dial refused and no state lost.
//
// Minimal use:
//
//	rep, err := loadcheck.Run(ctx, loadcheck.Config{Addr: "127.0.0.1:7070", Duration: 30 * time.Second})
//	if err != nil {
//		log.Fatal(err) // only an invalid Config
//	}
//	fmt.Print(rep)
//	if !rep.OK() {
//		os.Exit(1)
//	}
//
// Operational notes: a process holds at most ~19,900 sockets here, so keep
// Conns plus in-flight churn well under that and spread bigger runs over
// several processes. Pace the load (Rate > 0): a closed loop on 2 cores
// measures queueing, not the upgrade.
package loadcheck
