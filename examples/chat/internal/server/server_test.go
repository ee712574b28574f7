package server

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// A moved connection's state that this server did not write is refused
// with errState, whatever it holds.
func TestDecodeConnStateRefusesGarbage(t *testing.T) {
	for _, in := range []string{"", "{", "null", `{"kind":"video"}`, `{"kind":"chat","nick":"a"}`, `{"kind":"chat","room":"r"}`, `{"kind":"echo","count":-1}`} {
		if _, err := decodeConnState([]byte(in)); !errors.Is(err, errState) {
			t.Errorf("%q: err %v, want errState", in, err)
		}
	}
	want := connState{Kind: kindChat, Key: 7, Nick: "n", Room: "r", Last: 3, Queue: []msg{{4, "m", "x y"}}, Outbox: []string{"z"}}
	got, err := decodeConnState(want.encode())
	if err != nil || got.Key != 7 || got.Last != 3 || !slices.Equal(got.Queue, want.Queue) || !slices.Equal(got.Outbox, want.Outbox) {
		t.Errorf("round trip: %+v, %v", got, err)
	}
}

// A join with a bad room or nickname gets 400 and joins nothing.
func TestServeChatRefusesBadNames(t *testing.T) {
	h := New(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), nil)
	for _, q := range []string{"", "room=r", "nick=n", "room=a%20b&nick=n", "room=r&nick=%C3%A9"} {
		w := httptest.NewRecorder()
		h.ServeChat(w, httptest.NewRequest(http.MethodGet, "/ws?"+q, nil))
		if w.Code != http.StatusBadRequest {
			t.Errorf("%q: status %d, want 400", q, w.Code)
		}
	}
	if m, r := h.Members(); m != 0 || r != 0 {
		t.Errorf("%d members in %d rooms after refused joins", m, r)
	}
}

// The rooms saved in one process load in the next with every member
// detached and the room's numbering continued.
func TestSaveLoadRooms(t *testing.T) {
	old := New(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), nil)
	a, _ := old.join("a", "r")
	old.join("b", "r")
	old.mu.Lock()
	old.sayLocked(a, "hello")
	old.mu.Unlock()
	var buf bytes.Buffer
	old.frozen = true // Save freezes; thawWhenDone needs an upgrader, not wanted here
	if err := states.Save(&buf, snapshotOf(old), 1); err != nil {
		t.Fatal(err)
	}
	next := New(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), nil)
	if err := next.Load(&buf, 1<<40); err != nil {
		t.Fatal(err)
	}
	r := next.rooms["r"]
	if r == nil || r.last != 1 || len(r.members) != 2 || r.members[a.key] == nil || r.members[a.key].conn != nil {
		t.Fatalf("loaded room: %+v", r)
	}
}
