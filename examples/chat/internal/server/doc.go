// Package server is the chat gateway of examples/chat: WebSocket clients
// (gorilla/websocket, through package wshandoff) join a room with a
// nickname and receive every message said in it, numbered by the room.
//
// Protocol, one text message per line of it:
//
//	GET /ws?room=R&nick=N   the server says "joined R L" first, L the id of
//	                        the room's last message; then every message said
//	                        in R from L+1 on, in order, as "ID NICK TEXT".
//	                        Each text message the client sends is said in R.
//	GET /ws/echo            each text message T comes back as "N T", N the
//	                        number of messages the connection has sent (1, 2, ...).
//
// What moves at an upgrade: each connection carries its own state (its
// member key, nickname, room, the id of the last message written to it,
// the messages queued for it and not yet written, what it said while the
// rooms were frozen; an echo connection its count), and the room
// membership is the process's global state (Hub.Save, Hub.Load: a
// statefile). In rolling mode the snapshot is taken while the connections
// are served and each connection moves alone afterwards, so Save freezes
// the rooms: from the snapshot on the old process numbers nothing; what
// its clients say waits in their state and is said by the new process
// once they arrive there, which numbers on from the snapshot. Messages
// the new process numbers for a member that has not arrived yet wait in
// that member's queue. So every member sees every message of its room
// once, in order, across any number of upgrades. If the upgrade fails,
// the old process thaws and says what waited.
package server
