// Package statefile is the one format in which a server's in-memory state
// travels to its next version: over the handoff socket during a live
// upgrade, or through a file on disk across a cold restart. FORMAT.md
// describes the bytes.
//
// A file has a header (application, schema version, generation, creation
// time), named sections, and checksums on every part. It streams: the
// Writer and Reader hold one chunk at a time, so a state of a million
// accounts is written and read without a second copy of it in memory.
//
// An application registers its schema versions and the migrations between
// them, once:
//
//	var States = statefile.NewSet("pdf", statefile.Gob)
//
//	func init() {
//		statefile.Register(States, 1, saveV1, loadV1) // *V1 is schema 1
//		statefile.Register(States, 2, saveV2, loadV2) // *V2 is schema 2
//		statefile.AddStep(States, 1, 2, up1to2)       // func(*V1) (*V2, error)
//		statefile.AddStep(States, 2, 1, down2to1)     // and back down
//	}
//
// and then saves and loads, migrating to the schema it runs:
//
//	err := States.Save(w, ledger, generation+1)       // handoff.Options.SaveState
//	state, hdr, err := States.Load(r, 2)              // handoff.Options.LoadState
//	err = States.WriteFile(path, ledger, generation+1) // on SIGTERM
//	state, hdr, err = States.ReadFile(path, 2)         // on a cold start
//
// Load checks the application, the schema and the migration path before it
// decodes anything, and returns the state only once the whole file has
// been verified and every step has run; a caller that installs the result
// on success never holds a half-loaded state. Migration steps are plain
// functions: test them like any other code. A step that fails or panics is
// ErrMigration, and during a live upgrade that rolls the upgrade back.
//
// # Errors
//
// A file that fails validation (bit flips, truncation, wrong lengths) gives
// an error wrapping ErrCorrupt, and ErrChecksum or ErrTruncated where that
// applies. ReadFile moves such a file aside for inspection
// (CorruptFileError.MovedTo); whether to start empty or refuse to start is
// the application's choice. A whole file this program cannot use
// (ErrWrongApp, ErrUnknownSchema, ErrNoMigration, ErrFormatVersion) is left
// where it is.
//
// cmd/handoffctl inspect FILE prints a file's header and sections and
// verifies it.
package statefile
