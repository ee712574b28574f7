package statefile

import (
	"errors"
	"hash/crc32"
	"time"
)

// The container, as FORMAT.md describes it. All integers are big-endian.
const (
	// Magic opens every state file. Like PNG's, its first byte has the high
	// bit set and it holds CR LF, ^Z and LF, so that a file mangled by a
	// text-mode transfer is told from a damaged one.
	Magic = "\x89HST\r\n\x1a\n"

	// FormatVersion is the container version this package writes and the
	// only one it reads.
	FormatVersion = 1

	// MaxChunk bounds a chunk's length. A reader never allocates more than
	// this for a chunk, whatever lengths a damaged file claims.
	MaxChunk = 1 << 20

	tagSection = 'S'
	tagEnd     = 'E'

	headerFixed = len(Magic) + 2 + 2 // magic, format version, flags
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header describes the state a file holds.
type Header struct {
	App        string    // application name, 1 to 255 bytes
	Schema     uint32    // the application's schema version of the payload
	Generation uint64    // how many upgrades or restarts this state has lived through
	Created    time.Time // when the file was written
}

// Errors. Every error for a file that fails validation wraps ErrCorrupt;
// ErrTruncated and ErrChecksum say more. Errors of the schema layer name
// the application and both versions.
var (
	// ErrCorrupt: the input is not a well-formed state file.
	ErrCorrupt = errors.New("statefile: corrupt")
	// ErrTruncated: the input ends before the end record. Wraps ErrCorrupt.
	ErrTruncated = wrapCorrupt("truncated")
	// ErrChecksum: a checksum does not match the bytes. Wraps ErrCorrupt.
	ErrChecksum = wrapCorrupt("checksum mismatch")
	// ErrFormatVersion: a container version this package does not read.
	// The file may be fine; this program is too old for it.
	ErrFormatVersion = errors.New("statefile: unknown container format version")

	// ErrWrongApp: the file holds another application's state.
	ErrWrongApp = errors.New("statefile: state of another application")
	// ErrUnknownSchema: no codec is registered for the file's schema.
	ErrUnknownSchema = errors.New("statefile: unknown schema version")
	// ErrNoMigration: the registered migrations do not lead from the
	// file's schema to the one asked for.
	ErrNoMigration = errors.New("statefile: no migration path")
	// ErrMigration: a migration step failed or panicked.
	ErrMigration = errors.New("statefile: migration failed")
)

type corruptError struct{ what string }

func (e *corruptError) Error() string { return "statefile: corrupt: " + e.what }
func (e *corruptError) Unwrap() error { return ErrCorrupt }

func wrapCorrupt(what string) error { return &corruptError{what} }
