// Package ledger holds the account balances of the PDF server in the two
// in-memory layouts its versions use, the snapshot codec, and the migrations
// between them.
//
// Schema 1 is v1's live type, V1: two maps, balances and charge counts.
// Schema 2 is v2's live type, V2: one map of *Account. A snapshot of either
// schema loads into either type: V1.Load runs Down2to1 on a schema 2
// snapshot and V2.Load runs Up1to2 on a schema 1 snapshot, so an upgrade and a
// rollback both keep every balance and every charge count.
//
// The types are not safe for concurrent use; the server holds a lock.
package ledger
