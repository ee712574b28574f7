package statefile_test

import (
	"bytes"
	"fmt"

	"github.com/handoff-dev/handoff/statefile"
)

// Version 1 of an application counts calls; version 2 also counts SMS.
type countersV1 struct{ Calls int }
type countersV2 struct{ Calls, SMS int }

func saveOne[T any](out *statefile.Out, v T) error {
	enc, err := out.Section("counters")
	if err != nil {
		return err
	}
	return enc.Encode(v)
}

func loadOne[T any](in *statefile.In) (T, error) {
	var v T
	dec, err := in.Section("counters")
	if err == nil {
		err = dec.Decode(&v)
	}
	return v, err
}

func ExampleSet() {
	states := statefile.NewSet("switch", statefile.Gob)
	statefile.Register(states, 1, saveOne[countersV1], loadOne[countersV1])
	statefile.Register(states, 2, saveOne[countersV2], loadOne[countersV2])
	statefile.AddStep(states, 1, 2, func(v countersV1) (countersV2, error) {
		return countersV2{Calls: v.Calls}, nil
	})

	// The old version saves its state...
	var file bytes.Buffer
	if err := states.Save(&file, countersV1{Calls: 41}, 3); err != nil {
		panic(err)
	}
	// ...and the new one loads it as schema 2.
	state, h, err := states.Load(&file, 2)
	fmt.Printf("%+v from schema %d, generation %d, err %v\n", state, h.Schema, h.Generation, err)

	// There is no way back down: refused by name, before decoding.
	file.Reset()
	states.Save(&file, countersV2{Calls: 1, SMS: 2}, 4)
	_, _, err = states.Load(&file, 1)
	fmt.Println(err)
	// Output:
	// {Calls:41 SMS:0} from schema 1, generation 3, err <nil>
	// statefile: no migration path from schema 2 to 1 of switch: step 2→1 is missing (steps registered: 1→2)
}
