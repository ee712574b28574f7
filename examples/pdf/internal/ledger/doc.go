// Package ledger holds the account balances of the PDF server in the two
// in-memory layouts its versions use, and their statefile schemas.
//
// Schema 1 is v1's live type, V1: two maps, balances and charge counts.
// Schema 2 is v2's live type, V2: one map of *Account. States registers
// both with the migrations Up1to2 and Down2to1, so a state file of either
// schema loads as either type: an upgrade, a rollback and a cold restart
// of either version all keep every balance and every charge count.
//
// The types are not safe for concurrent use; the server holds a lock.
package ledger
