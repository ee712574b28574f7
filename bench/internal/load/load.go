// Package load is the client side of the upgrade benchmark: one process's
// share of the persistent connections, paced requests over them, and a
// record of every request (when it was due, when its reply came, and how
// it ended), plus a trickle of new connections that counts refusals.
//
// Each connection owns one account and only ever tops it up by 1, so the
// client knows every reply in advance: "OK <rid> <n>" for the n-th top-up.
// A reply with another balance means the server lost state (Failed); a
// reply to a request after the one expected means the ones skipped were
// lost; a reply to a request already answered is a duplicate. A dropped
// connection loses what was outstanding on it and is dialled again.
package load

import (
	"time"
)

// Outcome of one request.
type Outcome uint8

const (
	Pending    Outcome = iota // no reply (yet)
	OK                        // the expected reply
	Failed                    // a reply, but not the expected one: state was lost, or an error
	Lost                      // never answered: skipped, or outstanding on a dropped connection
	Duplicated                // a second reply to a request already answered
)

// Record is one request. Times are nanoseconds since the run's epoch.
type Record struct {
	Due     int64 // when the pacing schedule said to send it
	Sent    int64 // when it was written (later than Due if this client fell behind, or the connection was down)
	Replied int64 // 0 if never
	Conn    uint32
	Outcome Outcome
}

// Config is one client process's share of the load.
type Config struct {
	Addr     string
	Conns    int           // persistent connections
	Rate     float64       // requests per second over all of them
	Churn    float64       // new short-lived connections per second
	Duration time.Duration // how long to send, from when every connection is up
	Tag      string        // makes account names unique across processes
}

// Totals are the counters that are not per request.
type Totals struct {
	Dropped      int // times a persistent connection was closed or reset by the server
	DroppedConns int // persistent connections dropped at least once
	ChurnOK      int
	ChurnRefused int
	ChurnReset   int
}
