// Package proto is the wire protocol of the PDF charging server: how a request
// line is split off the stream, parsed, and how replies are written.
//
// One request per line, terminated by "\n" (a trailing "\r" is dropped), and
// one reply line per request, in order. The package is pure: it knows nothing
// of connections or of the ledger, so every rule is tested here.
//
//	HELLO <gw>                       WELCOME <gw>
//	TOPUP <rid> <acct> <amount>      OK <rid> <balance> | ERR <rid> overflow
//	CHARGE <rid> <acct> <amount>     OK <rid> <balance> | DENY <rid> <balance>
//	BALANCE <rid> <acct>             BAL <rid> <balance>
//	WHOAMI <rid>                     YOU <rid> <gw> <n>
//	VERSION <rid>                    VERSION <rid> <version> <pid>
//	STATS <rid> <acct>               STATS <rid> <balance> <charges>   (v2 only)
//
// A malformed line gets "ERR <rid or -> <reason>" and the connection stays
// open; a line longer than MaxLine gets "ERR - too-long" and is the last.
package proto
