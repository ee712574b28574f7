package statefile

import (
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Set knows one application's state schemas, the Go type that holds each
// in memory, how each is written and read, and the migration steps between
// them. Build it once, at init, with Register and AddStep; after that it is
// safe for concurrent use.
type Set struct {
	app     string
	codec   Codec
	schemas map[uint32]*schema
	byType  map[reflect.Type]uint32
	steps   map[uint32]map[uint32]*step // from, to
}

type schema struct {
	typ  reflect.Type
	save func(*Out, any) error
	load func(*In) (any, error)
}

type step struct {
	run func(any) (any, error)
}

// NewSet returns an empty Set for the application app. A nil codec means
// Gob.
func NewSet(app string, codec Codec) *Set {
	if err := checkName("application name", app); err != nil {
		panic(err)
	}
	if codec == nil {
		codec = Gob
	}
	return &Set{
		app:     app,
		codec:   codec,
		schemas: map[uint32]*schema{},
		byType:  map[reflect.Type]uint32{},
		steps:   map[uint32]map[uint32]*step{},
	}
}

// App returns the application name the Set writes and accepts.
func (s *Set) App() string { return s.app }

// Register teaches s schema version v, held in memory as a T: save writes
// a T into sections, load reads one back. load must build a new T and
// leave everything else alone: Set.Load discards its result if the rest
// of the file turns out damaged. Each version and each type can be
// registered once; Register panics otherwise, as this is a programming
// error.
func Register[T any](s *Set, v uint32, save func(*Out, T) error, load func(*In) (T, error)) {
	typ := reflect.TypeFor[T]()
	if _, dup := s.schemas[v]; dup {
		panic(fmt.Sprintf("statefile: schema %d of %s registered twice", v, s.app))
	}
	if old, dup := s.byType[typ]; dup {
		panic(fmt.Sprintf("statefile: type %v already holds schema %d of %s", typ, old, s.app))
	}
	s.byType[typ] = v
	s.schemas[v] = &schema{
		typ:  typ,
		save: func(o *Out, x any) error { return save(o, x.(T)) },
		load: func(in *In) (any, error) { return load(in) },
	}
}

// AddStep registers the migration from schema from, held as an F, to
// schema to, held as a T. Steps may go up or down; Load chains them. A
// step must not change its argument: when a later step fails, the state
// the process holds must be as it was. Both schemas must be registered
// first; AddStep panics otherwise.
func AddStep[F, T any](s *Set, from, to uint32, run func(F) (T, error)) {
	s.mustHave(from, reflect.TypeFor[F]())
	s.mustHave(to, reflect.TypeFor[T]())
	if s.steps[from] == nil {
		s.steps[from] = map[uint32]*step{}
	}
	s.steps[from][to] = &step{run: func(x any) (any, error) { return run(x.(F)) }}
}

func (s *Set) mustHave(v uint32, typ reflect.Type) {
	sc := s.schemas[v]
	if sc == nil || sc.typ != typ {
		panic(fmt.Sprintf("statefile: migration of %s names schema %d as %v, which is not registered", s.app, v, typ))
	}
}

// SchemaOf returns the schema version whose registered type is that of
// state.
func (s *Set) SchemaOf(state any) (uint32, error) {
	v, ok := s.byType[reflect.TypeOf(state)]
	if !ok {
		return 0, fmt.Errorf("%w: %s has no schema for type %T", ErrUnknownSchema, s.app, state)
	}
	return v, nil
}

// Schemas returns the registered schema versions in increasing order.
func (s *Set) Schemas() []uint32 { return slices.Sorted(maps.Keys(s.schemas)) }

// path returns the migration steps from one schema to another: the
// shortest chain, or an error that names both versions and the step that
// is missing.
func (s *Set) path(from, to uint32) ([]*step, error) {
	for _, v := range []uint32{from, to} {
		if s.schemas[v] == nil {
			return nil, fmt.Errorf("%w: schema %d of %s; this program knows schemas %s",
				ErrUnknownSchema, v, s.app, s.list())
		}
	}
	prev := map[uint32]uint32{from: from}
	queue := []uint32{from}
	for len(queue) > 0 && queue[0] != to {
		v := queue[0]
		queue = queue[1:]
		for _, next := range slices.Sorted(maps.Keys(s.steps[v])) {
			if _, seen := prev[next]; !seen {
				prev[next] = v
				queue = append(queue, next)
			}
		}
	}
	if _, ok := prev[to]; !ok {
		return nil, s.noPath(from, to, prev)
	}
	var chain []*step
	for v := to; v != from; v = prev[v] {
		chain = append(chain, s.steps[prev[v]][v])
	}
	slices.Reverse(chain)
	return chain, nil
}

// noPath explains a missing chain. Schema versions usually migrate one
// step at a time, so the missing step named is the first one on the walk
// from from towards to that cannot be taken.
func (s *Set) noPath(from, to uint32, reached map[uint32]uint32) error {
	v := from
	dir := uint32(1)
	if to < from {
		dir = ^uint32(0) // -1
	}
	for v != to {
		if _, ok := reached[v+dir]; !ok {
			break
		}
		v += dir
	}
	return fmt.Errorf("%w from schema %d to %d of %s: step %d→%d is missing (steps registered: %s)",
		ErrNoMigration, from, to, s.app, v, v+dir, s.stepList())
}

func (s *Set) list() string {
	var b strings.Builder
	for i, v := range s.Schemas() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, v)
	}
	return b.String()
}

func (s *Set) stepList() string {
	var parts []string
	for _, from := range slices.Sorted(maps.Keys(s.steps)) {
		for _, to := range slices.Sorted(maps.Keys(s.steps[from])) {
			parts = append(parts, fmt.Sprintf("%d→%d", from, to))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// migrate runs chain on state. A failing or panicking step is ErrMigration;
// state itself is never changed, as steps do not change their argument.
func (s *Set) migrate(state any, from, to uint32) (out any, err error) {
	chain, err := s.path(from, to)
	if err != nil {
		return nil, err
	}
	out = state
	for _, st := range chain {
		if out, err = protect(func() (any, error) { return st.run(out) }); err != nil {
			return nil, fmt.Errorf("%w from schema %d to %d of %s: %w", ErrMigration, from, to, s.app, err)
		}
	}
	return out, nil
}

// protect runs f and turns a panic into an error, so that a bug in a
// migration or a codec rolls an upgrade back instead of killing the
// process that is still serving.
func protect(f func() (any, error)) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

// Save writes state as a state file in its own schema, with the given
// generation (for a process that loaded its state, the loaded header's
// Generation plus one).
func (s *Set) Save(w io.Writer, state any, generation uint64) error {
	v, err := s.SchemaOf(state)
	if err != nil {
		return err
	}
	return s.write(w, state, v, generation)
}

// SaveAs migrates state to schema v, if it is not held in it, and writes
// it. It is how a newer version hands its state down to an older one. The
// state itself is not changed.
func (s *Set) SaveAs(w io.Writer, state any, v uint32, generation uint64) error {
	from, err := s.SchemaOf(state)
	if err != nil {
		return err
	}
	if state, err = s.migrate(state, from, v); err != nil {
		return err
	}
	return s.write(w, state, v, generation)
}

func (s *Set) write(w io.Writer, state any, v uint32, generation uint64) error {
	sw, err := NewWriter(w, Header{App: s.app, Schema: v, Generation: generation})
	if err != nil {
		return err
	}
	_, err = protect(func() (any, error) { return nil, s.schemas[v].save(&Out{w: sw, codec: s.codec}, state) })
	if err != nil {
		// The output failing (a full disk) shows up here as the saver's
		// error, wrapped or not; the Writer's own says what failed.
		if sw.err != nil {
			return sw.err
		}
		return wrap(err, "save schema %d of %s", v, s.app)
	}
	return sw.Close()
}

// Load reads a state file from r and returns its state migrated to schema
// want, with the file's header. The result exists only once the whole file
// has been read and its checksum verified and every migration step has
// run: a caller that installs it on success never holds a half-loaded
// state. The file's application, schema and migration path are checked
// before any payload is decoded.
func (s *Set) Load(r io.Reader, want uint32) (any, Header, error) {
	sr, err := NewReader(r)
	if err != nil {
		return nil, Header{}, err
	}
	h := sr.Header()
	if h.App != s.app {
		return nil, h, fmt.Errorf("%w: the file holds state of %q, this is %q", ErrWrongApp, h.App, s.app)
	}
	if _, err := s.path(h.Schema, want); err != nil {
		return nil, h, err
	}
	state, err := s.decode(sr, h.Schema)
	if err != nil {
		return nil, h, err
	}
	state, err = s.migrate(state, h.Schema, want)
	return state, h, err
}

// decode runs the loader of schema v over sr and then reads the file to
// its end, so that its checksum is verified before the state is used.
func (s *Set) decode(sr *Reader, v uint32) (any, error) {
	state, err := protect(func() (any, error) { return s.schemas[v].load(&In{r: sr, codec: s.codec}) })
	if err != nil {
		// A damaged file shows up here first, as a decode error over the
		// checked chunks or as the Reader's own; prefer the latter.
		if sr.err != nil {
			return nil, sr.err
		}
		return nil, wrap(err, "load schema %d of %s", v, s.app)
	}
	name, err := sr.Next()
	switch {
	case err == io.EOF:
		return state, nil
	case err != nil:
		return nil, err
	}
	return nil, fmt.Errorf("%w: section %q is not read by the loader of schema %d of %s", ErrCorrupt, name, v, s.app)
}

// Out is what a schema's save function writes to.
type Out struct {
	w     *Writer
	codec Codec
}

// Section starts a section and returns an Encoder for its values.
func (o *Out) Section(name string) (Encoder, error) {
	if err := o.w.Section(name); err != nil {
		return nil, err
	}
	return o.codec.NewEncoder(o.w), nil
}

// Bytes starts a section whose bytes the schema writes itself, bypassing
// the Codec: for a layout a general codec would only slow down, such as
// arrays of fixed-width numbers that a load reads in bulk. The bytes are
// chunked and checksummed like any section's.
func (o *Out) Bytes(name string) (io.Writer, error) {
	if err := o.w.Section(name); err != nil {
		return nil, err
	}
	return o.w, nil
}

// In is what a schema's load function reads from.
type In struct {
	r     *Reader
	codec Codec
}

// Section moves to the next section, which must be called name, and
// returns a Decoder for its values; Decode returns io.EOF at its end.
func (in *In) Section(name string) (Decoder, error) {
	if err := in.next(name); err != nil {
		return nil, err
	}
	return in.codec.NewDecoder(in.r), nil
}

// Bytes moves to the next section, which must be called name, and returns
// its bytes as they are, without the Codec, as Out.Bytes wrote them; Read
// returns io.EOF at the section's end. Every byte has passed its chunk's
// checksum, but the file is whole only once Load has read it to its end.
func (in *In) Bytes(name string) (io.Reader, error) {
	if err := in.next(name); err != nil {
		return nil, err
	}
	return in.r, nil
}

func (in *In) next(name string) error {
	got, err := in.r.Next()
	switch {
	case err == io.EOF:
		return fmt.Errorf("%w: the file ends before section %q", ErrCorrupt, name)
	case err != nil:
		return err
	case got != name:
		return fmt.Errorf("%w: section %q where %q belongs", ErrCorrupt, got, name)
	}
	return nil
}
