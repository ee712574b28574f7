package statefile

import (
	"encoding/gob"
	"io"
)

// Codec turns an application's values into a section's bytes and back,
// one value at a time, so a large state streams through in pieces.
// A Codec must be safe to use from several goroutines; the Encoders and
// Decoders it makes need not be.
type Codec interface {
	NewEncoder(w io.Writer) Encoder
	NewDecoder(r io.Reader) Decoder
}

// Encoder writes values to a section.
type Encoder interface {
	Encode(v any) error
}

// Decoder reads values from a section. Decode returns io.EOF, unwrapped,
// once the section holds no more values.
type Decoder interface {
	Decode(v any) error
}

// Gob is the default Codec: encoding/gob. It needs no code generation and
// no schema file; it encodes exported fields by name, so a field added to
// or removed from a struct between schema versions still decodes (the
// migration then fills it in); it sends each type once per section, so a
// stream of many small records costs little more than their data; and it
// is in the standard library, so it will read the same bytes for as long
// as Go does. It is Go-only: an application that shares state files with
// other languages should bring its own Codec.
//
// Decode each value into a fresh variable: gob leaves zero fields out, so
// decoding into a used one keeps its old values where the new one has
// zeros.
var Gob Codec = gobCodec{}

type gobCodec struct{}

func (gobCodec) NewEncoder(w io.Writer) Encoder { return gob.NewEncoder(w) }
func (gobCodec) NewDecoder(r io.Reader) Decoder { return gob.NewDecoder(r) }
