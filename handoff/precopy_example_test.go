package handoff_test

import (
	"encoding/gob"
	"io"
	"log"
	"maps"
	"sync"

	"github.com/handoff-dev/handoff/handoff"
)

// A ledger too large to save and load in the pause: its balances move
// while the connections are served, and in the pause only the accounts
// changed since. SaveState and LoadState still move it whole, for a stop
// and for a new process without Precopy. (A real server writes a state
// file, statefile.Set.Save, whose header names the schema; gob keeps the
// example short.)
func ExampleOptions_precopy() {
	l := &ledger{balances: map[string]int64{}}
	up, err := handoff.New(handoff.Options{
		SaveState: l.saveAll,
		LoadState: l.loadAll,
		Precopy: &handoff.Precopy{
			Save:        l.saveBulk,    // old process, serving
			Load:        l.loadAll,     // new process, the old one serving
			SaveChanges: l.saveChanges, // old process, every connection parked
			LoadChanges: l.loadChanges, // new process, on what Load read
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = up // Listen, Ready and serve as in Example
}

type ledger struct {
	mu       sync.Mutex
	balances map[string]int64
	changed  map[string]bool // accounts changed since saveBulk read them; nil before
}

// add is what the connections' handlers do.
func (l *ledger) add(account string, amount int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.balances[account] += amount
	if l.changed != nil {
		l.changed[account] = true
	}
}

// saveBulk reads the balances and, in the same moment, begins to track
// what changes; it writes them outside the lock, the handlers going on.
func (l *ledger) saveBulk(w io.Writer) error {
	l.mu.Lock()
	bulk := maps.Clone(l.balances)
	l.changed = map[string]bool{}
	l.mu.Unlock()
	return gob.NewEncoder(w).Encode(bulk)
}

// saveChanges writes the balances of the accounts changed since saveBulk.
func (l *ledger) saveChanges(w io.Writer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	changes := make(map[string]int64, len(l.changed))
	for account := range l.changed {
		changes[account] = l.balances[account]
	}
	return gob.NewEncoder(w).Encode(changes)
}

func (l *ledger) saveAll(w io.Writer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return gob.NewEncoder(w).Encode(l.balances)
}

func (l *ledger) loadAll(r io.Reader) error {
	var balances map[string]int64
	if err := gob.NewDecoder(r).Decode(&balances); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.balances = balances
	return nil
}

func (l *ledger) loadChanges(r io.Reader) error {
	var changes map[string]int64
	if err := gob.NewDecoder(r).Decode(&changes); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	maps.Copy(l.balances, changes)
	return nil
}
