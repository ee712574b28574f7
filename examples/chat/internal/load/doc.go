// Package load is the chat example's load generator (cmd/chatload, and
// the process tests): it holds chat and echo clients on a real server,
// sends on a schedule, checks every message each client gets, reconnects
// a client whose connection drops as Centrifugo's and Rails' clients do
// (exponential backoff with full jitter) and counts it, and can upgrade
// the server with SIGHUP on a schedule.
//
// Each chat client checks that the room's ids it gets are consecutive
// from the id its "joined" line said: an id skipped is a message missed
// (lost for that client), an id that goes back is reordered. Each message
// it sends carries its sequence number and send time, and must come back
// to it (the room says it to every member, the sender too): a send that
// never does is unechoed. An echo client checks that every reply's count
// is one more than the last.
package load
