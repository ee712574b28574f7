package statefile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// Three schema versions of a counter application. v1 keeps a count, v2
// renames it and adds a unit, v3 splits the count into two sections.
type cv1 struct{ N int }
type cv2 struct {
	Count int
	Unit  string
}
type cv3 struct {
	Count int
	Unit  string
	Extra []string
}

func one[T any](name string) (func(*Out, T) error, func(*In) (T, error)) {
	save := func(o *Out, v T) error {
		enc, err := o.Section(name)
		if err != nil {
			return err
		}
		return enc.Encode(v)
	}
	load := func(in *In) (T, error) {
		var v T
		dec, err := in.Section(name)
		if err == nil {
			err = dec.Decode(&v)
		}
		return v, err
	}
	return save, load
}

// counters returns a Set with schemas 1..3 and the steps named in steps,
// as "1>2", "2>1", ...
func counters(steps ...string) *Set {
	s := NewSet("counter", nil)
	save1, load1 := one[cv1]("v1")
	save2, load2 := one[cv2]("v2")
	Register(s, 1, save1, load1)
	Register(s, 2, save2, load2)
	Register(s, 3, saveV3, loadV3)
	all := map[string]func(){
		"1>2": func() { AddStep(s, 1, 2, func(v cv1) (cv2, error) { return cv2{v.N, "calls"}, nil }) },
		"2>1": func() { AddStep(s, 2, 1, func(v cv2) (cv1, error) { return cv1{v.Count}, nil }) },
		"2>3": func() { AddStep(s, 2, 3, func(v cv2) (cv3, error) { return cv3{v.Count, v.Unit, nil}, nil }) },
		"3>2": func() {
			AddStep(s, 3, 2, func(v cv3) (cv2, error) {
				if len(v.Extra) > 0 {
					return cv2{}, fmt.Errorf("%d extras have no place in schema 2", len(v.Extra))
				}
				return cv2{v.Count, v.Unit}, nil
			})
		},
	}
	for _, st := range steps {
		all[st]()
	}
	return s
}

func saveV3(o *Out, v cv3) error {
	enc, err := o.Section("count")
	if err != nil {
		return err
	}
	if err := enc.Encode(cv2{v.Count, v.Unit}); err != nil {
		return err
	}
	if enc, err = o.Section("extra"); err != nil {
		return err
	}
	for _, e := range v.Extra {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}

func loadV3(in *In) (cv3, error) {
	var c cv2
	dec, err := in.Section("count")
	if err == nil {
		err = dec.Decode(&c)
	}
	if err == nil {
		dec, err = in.Section("extra")
	}
	v := cv3{Count: c.Count, Unit: c.Unit}
	for err == nil {
		var e string
		if err = dec.Decode(&e); err == nil {
			v.Extra = append(v.Extra, e)
		}
	}
	if err == io.EOF {
		err = nil
	}
	return v, err
}

func saved(t testing.TB, s *Set, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := s.Save(&b, v, 4); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestMigrationChains(t *testing.T) {
	s := counters("1>2", "2>1", "2>3", "3>2")
	tests := []struct {
		in   any
		want uint32
		out  any
	}{
		{cv1{5}, 1, cv1{5}},
		{cv1{5}, 3, cv3{5, "calls", nil}},
		{cv3{7, "calls", []string{"a", "b"}}, 3, cv3{7, "calls", []string{"a", "b"}}},
		{cv3{7, "sms", nil}, 1, cv1{7}},
		{cv2{3, "x"}, 1, cv1{3}},
	}
	for _, tt := range tests {
		got, h, err := s.Load(bytes.NewReader(saved(t, s, tt.in)), tt.want)
		if err != nil {
			t.Errorf("%+v as schema %d: %v", tt.in, tt.want, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.out) {
			t.Errorf("%+v as schema %d = %+v, want %+v", tt.in, tt.want, got, tt.out)
		}
		if h.Generation != 4 || h.App != "counter" {
			t.Errorf("header %+v", h)
		}
	}
}

func TestSaveAsGoesDown(t *testing.T) {
	s := counters("1>2", "2>1", "2>3", "3>2")
	var b bytes.Buffer
	in := cv3{9, "calls", nil}
	if err := s.SaveAs(&b, in, 1, 0); err != nil {
		t.Fatal(err)
	}
	r, _ := NewReader(bytes.NewReader(b.Bytes()))
	if r.Header().Schema != 1 {
		t.Fatalf("SaveAs wrote schema %d", r.Header().Schema)
	}
	got, _, err := counters().Load(&b, 1) // a Set that knows no steps at all
	if err != nil || got != (cv1{9}) {
		t.Fatalf("loaded %+v, %v", got, err)
	}
}

// Refusals name the application, both versions and what is missing, and
// happen before the payload is decoded.
func TestRefusals(t *testing.T) {
	full := counters("1>2", "2>1", "2>3", "3>2")
	v3 := saved(t, full, cv3{1, "u", nil})
	other := NewSet("other", nil)
	save, load := one[cv1]("v1")
	Register(other, 1, save, load)
	tests := []struct {
		name  string
		set   *Set
		file  []byte
		want  uint32
		err   error
		words []string
	}{
		{"gap down", counters("1>2", "2>3", "2>1"), v3, 1, ErrNoMigration, []string{"from schema 3 to 1", "counter", "step 3→2 is missing"}},
		{"gap up", counters("2>3"), saved(t, full, cv1{1}), 3, ErrNoMigration, []string{"from schema 1 to 3", "step 1→2 is missing", "2→3"}},
		{"control", other, saved(t, other, cv1{1}), 1, nil, nil},
		{"wrong app", other, v3, 1, ErrWrongApp, []string{`"counter"`, `"other"`}},
		{"unknown wanted schema", full, v3, 9, ErrUnknownSchema, []string{"schema 9 of counter", "1, 2, 3"}},
		{"unknown file schema", full, rewriteSchema(t, v3, 8), 1, ErrUnknownSchema, []string{"schema 8 of counter"}},
		{"failing step", full, saved(t, full, cv3{1, "u", []string{"x"}}), 1, ErrMigration, []string{"from schema 3 to 1", "extras have no place"}},
	}
	for _, tt := range tests {
		got, _, err := tt.set.Load(bytes.NewReader(tt.file), tt.want)
		if tt.err == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.err) || got != nil {
			t.Errorf("%s: got %v, %v; want nil, %v", tt.name, got, err, tt.err)
			continue
		}
		for _, w := range tt.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tt.name, err, w)
			}
		}
	}
}

// rewriteSchema returns file with another schema number in its header and
// the header and file checksums made right again.
func rewriteSchema(t *testing.T, file []byte, v uint32) []byte {
	t.Helper()
	r, err := NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header()
	h.Schema = v
	var b bytes.Buffer
	w, _ := NewWriter(&b, h)
	for {
		name, err := r.Next()
		if err == io.EOF {
			break
		}
		w.Section(name)
		io.Copy(w, r)
	}
	w.Close()
	return b.Bytes()
}

// A loader or migration that panics is an error, and nothing is returned.
func TestPanicsAreErrors(t *testing.T) {
	s := NewSet("p", nil)
	save, load := one[cv1]("v1")
	Register(s, 1, save, load)
	Register(s, 2, func(*Out, cv2) error { panic("save bug") }, func(*In) (cv2, error) { panic("load bug") })
	AddStep(s, 1, 2, func(cv1) (cv2, error) { panic("step bug") })
	AddStep(s, 2, 1, func(v cv2) (cv1, error) { return cv1{v.Count}, nil })
	if v, _, err := s.Load(bytes.NewReader(saved(t, s, cv1{1})), 2); !errors.Is(err, ErrMigration) || v != nil {
		t.Errorf("panicking step: %v, %v", v, err)
	}
	if err := s.Save(io.Discard, cv2{}, 0); err == nil || !strings.Contains(err.Error(), "save bug") {
		t.Errorf("panicking save: %v", err)
	}
	file := rewriteSchema(t, saved(t, s, cv1{1}), 2)
	if v, _, err := s.Load(bytes.NewReader(file), 1); err == nil || !strings.Contains(err.Error(), "load bug") || v != nil {
		t.Errorf("panicking load: %v, %v", v, err)
	}
}

// A file damaged after the sections the loader has read already is still
// refused as a whole: the decoded state is never returned.
func TestDamageAfterDecodingRefused(t *testing.T) {
	s := counters("1>2", "2>1", "2>3", "3>2")
	file := saved(t, s, cv3{1, "u", []string{"a", "b", "c"}})
	for _, cut := range []int{len(file) - 1, len(file) - 5, len(file) - 20} {
		if v, _, err := s.Load(bytes.NewReader(file[:cut]), 3); !errors.Is(err, ErrTruncated) || v != nil {
			t.Errorf("cut at %d of %d: %v, %v", cut, len(file), v, err)
		}
	}
	bad := bytes.Clone(file)
	bad[len(bad)-1] ^= 1 // the file checksum only
	if v, _, err := s.Load(bytes.NewReader(bad), 3); !errors.Is(err, ErrChecksum) || v != nil {
		t.Errorf("bad file checksum: %v, %v", v, err)
	}
}

// A section the loader does not read means the writer and the loader
// disagree on the schema: refused, not ignored.
func TestUnreadSectionRefused(t *testing.T) {
	s := NewSet("counter", nil)
	save, load := one[cv1]("v1")
	Register(s, 1, func(o *Out, v cv1) error {
		if err := save(o, v); err != nil {
			return err
		}
		_, err := o.Section("surprise")
		return err
	}, load)
	if _, _, err := s.Load(bytes.NewReader(saved(t, s, cv1{1})), 1); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "surprise") {
		t.Fatalf("err = %v", err)
	}
}

func TestRegisterPanicsOnMistakes(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	save, load := one[cv1]("v1")
	mustPanic("schema twice", func() { s := counters(); Register(s, 1, saveV3, loadV3) })
	mustPanic("type twice", func() { s := counters(); Register(s, 4, save, load) })
	mustPanic("step to unknown schema", func() {
		AddStep(counters(), 1, 7, func(cv1) (cv2, error) { return cv2{}, nil })
	})
	mustPanic("step with the wrong type", func() {
		AddStep(counters(), 1, 2, func(cv2) (cv2, error) { return cv2{}, nil })
	})
}

// FuzzPayload feeds arbitrary section bytes, inside a container whose
// checksums are right, to the loaders: the codec and the loaders must
// refuse what they cannot read, without panicking or hanging, and what
// they accept must survive a save and a load.
func FuzzPayload(f *testing.F) {
	s := counters("1>2", "2>1", "2>3", "3>2")
	for _, v := range []any{cv1{3}, cv2{4, "u"}, cv3{5, "u", []string{"a"}}} {
		r, _ := NewReader(bytes.NewReader(saved(f, s, v)))
		var parts [][]byte
		for {
			if _, err := r.Next(); err != nil {
				break
			}
			b, _ := io.ReadAll(r)
			parts = append(parts, b)
		}
		parts = append(parts, nil)
		v, _ := s.SchemaOf(v)
		f.Add(uint8(v), parts[0], parts[1])
	}
	f.Fuzz(func(t *testing.T, schema uint8, a, b []byte) {
		names := map[uint32][]string{1: {"v1"}, 2: {"v2"}, 3: {"count", "extra"}}[uint32(schema)]
		if names == nil {
			return
		}
		var file bytes.Buffer
		w, _ := NewWriter(&file, Header{App: "counter", Schema: uint32(schema)})
		for i, name := range names {
			w.Section(name)
			w.Write([][]byte{a, b}[i])
		}
		w.Close()
		v, _, err := s.Load(bytes.NewReader(file.Bytes()), 3)
		if err != nil {
			return
		}
		again, _, err := s.Load(bytes.NewReader(saved(t, s, v)), 3)
		if err != nil || fmt.Sprint(again) != fmt.Sprint(v) {
			t.Fatalf("%+v did not survive a save and a load: %+v, %v", v, again, err)
		}
	})
}

// A schema may write a section's bytes itself (Out.Bytes) between coded
// ones; In.Bytes reads them back as written, ends at the section's end,
// and refuses a section of another name.
func TestRawSection(t *testing.T) {
	type raw struct {
		Head string
		Body []byte
	}
	s := NewSet("raw", nil)
	Register(s, 1, func(o *Out, v raw) error {
		enc, err := o.Section("head")
		if err == nil {
			err = enc.Encode(v.Head)
		}
		if err != nil {
			return err
		}
		w, err := o.Bytes("body")
		if err == nil {
			_, err = w.Write(v.Body)
		}
		return err
	}, func(in *In) (raw, error) {
		var v raw
		dec, err := in.Section("head")
		if err == nil {
			err = dec.Decode(&v.Head)
		}
		if err != nil {
			return v, err
		}
		r, err := in.Bytes("body")
		if err == nil {
			v.Body, err = io.ReadAll(r)
		}
		return v, err
	})
	want := raw{"h", bytes.Repeat([]byte{1, 2, 3}, 100_000)} // several chunks
	var b bytes.Buffer
	if err := s.Save(&b, want, 1); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Load(bytes.NewReader(b.Bytes()), 1)
	if err != nil {
		t.Fatal(err)
	}
	if g := got.(raw); g.Head != want.Head || !bytes.Equal(g.Body, want.Body) {
		t.Fatalf("got head %q and %d body bytes, want %q and %d", g.Head, len(g.Body), want.Head, len(want.Body))
	}

	// The same bytes under another section name.
	other := NewSet("raw", nil)
	Register(other, 1, func(*Out, raw) error { return nil }, func(in *In) (raw, error) {
		_, err := in.Bytes("tail")
		return raw{}, err
	})
	if _, _, err := other.Load(bytes.NewReader(b.Bytes()), 1); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"head" where "tail" belongs`) {
		t.Fatalf("err = %v, want ErrCorrupt naming both sections", err)
	}
}
