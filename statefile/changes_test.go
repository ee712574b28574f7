package statefile

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestChanges marks random items over several trackings against a map:
// Marked holds exactly the items marked since the last Start, each once,
// in the order of their first mark, and nothing while not tracking.
func TestChanges(t *testing.T) {
	var c Changes
	c.Mark(3)
	if c.Tracking() || len(c.Marked()) != 0 {
		t.Fatalf("the zero Changes recorded %v", c.Marked())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 5 {
		c.Start()
		seen := map[uint32]bool{}
		var want []uint32
		for range 20000 {
			i := uint32(rng.IntN(100000 * (round + 1)))
			c.Mark(i)
			if !seen[i] {
				seen[i] = true
				want = append(want, i)
			}
		}
		if !slices.Equal(c.Marked(), want) {
			t.Fatalf("round %d: %d marked, want %d, or another order", round, len(c.Marked()), len(want))
		}
	}
	c.Stop()
	c.Mark(1)
	if c.Tracking() || len(c.Marked()) != 0 {
		t.Fatalf("after Stop: tracking %v, marked %v", c.Tracking(), c.Marked())
	}
	c.Start()
	c.Mark(1)
	if !slices.Equal(c.Marked(), []uint32{1}) {
		t.Fatalf("after Stop and Start: %v, want [1]", c.Marked())
	}
}
