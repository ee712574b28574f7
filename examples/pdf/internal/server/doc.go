// Package server serves the PDF protocol over handoff connections. Both
// versions of the server use it; they differ only in the Ledger they pass to
// New and in their version string.
//
// Each connection has a session, the gateway name from HELLO and the number
// of requests so far, which travels with the connection through an upgrade
// as the state given to Park. The ledger is shared by all connections and
// travels as the upgrade's global state (SaveState, LoadState).
package server
