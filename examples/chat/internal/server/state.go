package server

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/handoff-dev/handoff/statefile"
)

// states is the global state's file format: the rooms and their members.
var states = statefile.NewSet("chat", statefile.Gob)

// schema is the version of roomsV1 in states.
const schema = 1

type roomsV1 struct {
	Rooms []roomV1
}

type roomV1 struct {
	Name    string
	Last    uint64 // the id of the room's last message
	Members []memberV1
}

type memberV1 struct {
	Key  uint64
	Nick string
}

func init() {
	statefile.Register(states, schema, saveRooms, loadRooms)
}

func saveRooms(out *statefile.Out, r roomsV1) error {
	enc, err := out.Section("rooms")
	if err != nil {
		return err
	}
	return enc.Encode(r)
}

func loadRooms(in *statefile.In) (roomsV1, error) {
	var r roomsV1
	dec, err := in.Section("rooms")
	if err == nil {
		err = dec.Decode(&r)
	}
	return r, err
}

// Kinds of connection state.
const (
	kindChat = "chat"
	kindEcho = "echo"
)

// connState is what a connection carries at an upgrade (Conn.OnPark).
type connState struct {
	Kind string `json:"kind"`
	// An echo connection's count of messages.
	Count uint64 `json:"count,omitempty"`
	// A chat member.
	Key    uint64   `json:"key,omitempty"`
	Nick   string   `json:"nick,omitempty"`
	Room   string   `json:"room,omitempty"`
	Last   uint64   `json:"last,omitempty"`   // the id of the last message written to the client
	Queue  []msg    `json:"queue,omitempty"`  // numbered, not yet written
	Outbox []string `json:"outbox,omitempty"` // said while frozen, not yet numbered
}

var errState = errors.New("chat: not a connection state of this server")

func decodeConnState(b []byte) (connState, error) {
	var s connState
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%w: %w", errState, err)
	}
	if s.Kind != kindChat && s.Kind != kindEcho {
		return s, fmt.Errorf("%w: kind %q", errState, s.Kind)
	}
	if s.Kind == kindChat && (s.Room == "" || s.Nick == "") {
		return s, fmt.Errorf("%w: a member without room or nickname", errState)
	}
	return s, nil
}

func (s connState) encode() []byte {
	b, _ := json.Marshal(s) // plain fields: cannot fail
	return b
}
