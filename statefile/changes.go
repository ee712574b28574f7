package statefile

// Changes records which items of a state changed since Start: the means of
// a pre-copy (handoff.Precopy), where the bulk of a state is sent while it
// still changes, and in the pause only what changed since. Items are
// numbered by the application (a record's index, say); an item added after
// Start is marked like a changed one.
//
// Marking is one test when not tracking, and a bit test (plus an append
// the first time) when tracking, so that it can sit on every write of a
// hot path. A Changes is not safe for concurrent use: mark under the lock
// that guards the state it tracks. The zero value tracks nothing.
type Changes struct {
	on    bool
	seen  []uint64 // bit i: item i is in order
	order []uint32 // the items marked since Start, each once, first mark first
}

// Start forgets every mark and begins tracking.
func (c *Changes) Start() {
	c.forget()
	c.on = true
}

// Stop ends tracking and forgets every mark.
func (c *Changes) Stop() {
	c.forget()
	c.on = false
}

// forget clears the marks, word by word of those marked: cheap after a
// few changes, whatever the number of items.
func (c *Changes) forget() {
	for _, i := range c.order {
		c.seen[i/64] = 0
	}
	c.order = c.order[:0]
}

// Tracking says whether marks are being recorded.
func (c *Changes) Tracking() bool { return c.on }

// Mark records that item i changed, if tracking.
func (c *Changes) Mark(i uint32) {
	if !c.on {
		return
	}
	w, bit := int(i/64), uint64(1)<<(i%64)
	if w >= len(c.seen) {
		c.seen = append(c.seen, make([]uint64, w+1-len(c.seen)+len(c.seen)/4)...)
	}
	if c.seen[w]&bit != 0 {
		return
	}
	c.seen[w] |= bit
	c.order = append(c.order, i)
}

// Marked returns the items marked since Start, each once, in the order of
// their first mark. The slice is the Changes' own: read it before the
// next Start or Mark.
func (c *Changes) Marked() []uint32 { return c.order }
