package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"time"
)

// Version is the version of the protocol (PROTOCOL.md) this package speaks.
// Both ends must speak the same one.
const Version = 5

// Type is a frame's type, one byte on the wire.
type Type byte

const (
	TypeHello    Type = 1
	TypePlan     Type = 2
	TypeConns    Type = 3
	TypeProgress Type = 4
	TypeState    Type = 5
	TypeStateEnd Type = 6
	TypeReady    Type = 7
	TypeCommit   Type = 8
	TypeAbort    Type = 9
	TypeFinal    Type = 10
	TypeParked   Type = 11
	TypeCarry    Type = 12
	TypeServing  Type = 13
	TypeClosed   Type = 14
	TypeEnd      Type = 15
	// The peer transport's (peer.go).
	TypeTakeover  Type = 16
	TypeBusy      Type = 17
	TypeListeners Type = 18
	// The pre-copy's (Plan.Precopy).
	TypePrecopy Type = 19
)

var typeNames = [...]string{
	TypeHello: "HELLO", TypePlan: "PLAN", TypeConns: "CONNS", TypeProgress: "PROGRESS",
	TypeState: "STATE", TypeStateEnd: "STATE_END", TypeReady: "READY",
	TypeCommit: "COMMIT", TypeAbort: "ABORT", TypeFinal: "FINAL", TypeParked: "PARKED",
	TypeCarry: "CARRY", TypeServing: "SERVING", TypeClosed: "CLOSED", TypeEnd: "END",
	TypeTakeover: "TAKEOVER", TypeBusy: "BUSY", TypeListeners: "LISTENERS",
	TypePrecopy: "PRECOPY",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("unknown(%d)", byte(t))
}

const (
	// MaxString is the longest version, name or reason string.
	MaxString = 4096
	// MaxFdsPerMsg is how many fds one frame carries at most (SCM_MAX_FD).
	MaxFdsPerMsg = 253
	// MaxBatchBytes is about the size at which a sender cuts a CONNS or
	// PARKED frame.
	MaxBatchBytes = 1 << 20
	helloMagic    = "HOFF" // first bytes of a HELLO payload
)

// An Encoder is a frame a channel can send: Append appends its payload.
type Encoder interface {
	Type() Type
	Append(b []byte) []byte
}

// A Decoder is a frame a channel can receive: Decode reads its payload, and
// fails with an error wrapping ErrProtocol if the payload is not one.
type Decoder interface {
	Type() Type
	Decode(p []byte) error
}

// Msg is a frame as received: its type, its payload, and the fds that came
// with it, which belong to the receiver.
type Msg struct {
	Type    Type
	Payload []byte
	Fds     []int
}

// Expect decodes m into f, which must be of m's type: the one check of
// "the frame this step waits for" every session step makes. m's fds are
// the caller's to check.
func (m Msg) Expect(f Decoder) error {
	if err := m.ExpectType(f.Type()); err != nil {
		return err
	}
	return f.Decode(m.Payload)
}

// Refusal returns, for the peer's ABORT, an error wrapping ErrRejected
// with its reason; nil for any other frame.
func (m Msg) Refusal() error {
	if m.Type != TypeAbort {
		return nil
	}
	var a Abort
	_ = a.Decode(m.Payload) // a reason cut short is still a refusal
	return fmt.Errorf("%w: %s", ErrRejected, a.Reason)
}

// ExpectType checks m's type alone, for a frame whose payload the caller
// reads leniently or not at all.
func (m Msg) ExpectType(t Type) error {
	if m.Type != t {
		return Errorf("expected %s, got %s", t, m.Type)
	}
	return nil
}

// Hello is the first frame each side sends.
type Hello struct {
	Version    uint16
	PID        uint32
	FdLimit    uint32 // RLIMIT_NOFILE of the sender
	FdOpen     uint32 // fds the sender has open
	AppVersion string
	App        string // the application's name
}

func (Hello) Type() Type { return TypeHello }

func (h Hello) Append(b []byte) []byte {
	b = append(b, helloMagic...)
	b = binary.BigEndian.AppendUint16(b, h.Version)
	b = binary.BigEndian.AppendUint32(b, h.PID)
	b = binary.BigEndian.AppendUint32(b, h.FdLimit)
	b = binary.BigEndian.AppendUint32(b, h.FdOpen)
	b = appendString(b, h.AppVersion)
	return appendString(b, h.App)
}

// Decode reads a HELLO. Of a HELLO of another protocol version it reads
// the version alone, whose layout every version shares: the rest may
// differ, and the caller refuses the peer for its version, saying so,
// rather than for a field it cannot read.
func (h *Hello) Decode(p []byte) error {
	*h = Hello{}
	d, err := afterMagic(TypeHello, p)
	if err != nil {
		return err
	}
	h.Version = d.U16()
	if d.Err() == nil && h.Version != Version {
		return nil
	}
	h.PID, h.FdLimit, h.FdOpen = d.U32(), d.U32(), d.U32()
	h.AppVersion = d.str()
	h.App = d.str()
	return d.finish(TypeHello)
}

// Plan is the PLAN frame: the mode (its number; what it means is the
// sessions'), how many connections' fds the old process sends early,
// whether its application's state follows, and whether the old process
// offers to send the bulk of it before the park (a pre-copy), which only
// a state allows.
type Plan struct {
	Mode    uint8
	Early   uint32
	State   bool
	Precopy bool
}

// PLAN's flags: "state follows", and "a pre-copy is offered". The other
// bits are 0: a decoder refuses them, as the releases before the pre-copy
// refuse planPrecopy.
const (
	planState   = 1
	planPrecopy = 2
)

func (Plan) Type() Type { return TypePlan }

func (p Plan) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(append(b, p.Mode), p.Early)
	var flags byte
	if p.State {
		flags |= planState
	}
	if p.Precopy {
		flags |= planPrecopy
	}
	return append(b, flags)
}

func (p *Plan) Decode(b []byte) error {
	d := newDecoder(b)
	p.Mode, p.Early = d.U8(), d.U32()
	flags := d.U8()
	p.State, p.Precopy = flags&planState != 0, flags&planPrecopy != 0
	if err := d.finish(TypePlan); err != nil {
		return err
	}
	if flags&^(planState|planPrecopy) != 0 {
		return Errorf("PLAN has unknown flags %#x", flags)
	}
	if p.Precopy && !p.State {
		return Errorf("PLAN offers a pre-copy without a state")
	}
	return nil
}

// PrecopyStep is what a PRECOPY frame says: one step of a pre-copy, in
// the order the steps come (PROTOCOL.md).
type PrecopyStep uint8

const (
	// PrecopyDecline: the new process, answering a PLAN that offers a
	// pre-copy, will not load one; the upgrade goes on as without it.
	PrecopyDecline PrecopyStep = iota
	// PrecopyTake: the new process, answering such a PLAN, will load it.
	PrecopyTake
	// PrecopyBegin: the old process has sent its early fds; the
	// pre-copy's state stream follows.
	PrecopyBegin
	// PrecopyLoaded: the new process has loaded the pre-copy.
	PrecopyLoaded
	precopySteps
)

var precopyStepNames = [...]string{"decline", "take", "begin", "loaded"}

func (s PrecopyStep) String() string {
	if s < precopySteps {
		return precopyStepNames[s]
	}
	return fmt.Sprintf("step(%d)", uint8(s))
}

// Precopy is the PRECOPY frame: one step of a pre-copy.
type Precopy struct{ Step PrecopyStep }

func (Precopy) Type() Type { return TypePrecopy }

func (p Precopy) Append(b []byte) []byte { return append(b, byte(p.Step)) }

func (p *Precopy) Decode(b []byte) error {
	d := newDecoder(b)
	p.Step = PrecopyStep(d.U8())
	if err := d.finish(TypePrecopy); err != nil {
		return err
	}
	if p.Step >= precopySteps {
		return Errorf("PRECOPY says step %d, which this version does not know", uint8(p.Step))
	}
	return nil
}

// Expect decodes m as a PRECOPY that says step.
func (p *Precopy) Expect(m Msg, step PrecopyStep) error {
	if err := m.Expect(p); err != nil {
		return err
	}
	if p.Step != step {
		return Errorf("PRECOPY says %s, expected %s", p.Step, step)
	}
	return nil
}

// Progress acknowledges a CONNS or PARKED frame: its sequence number, and
// how many connections the receiver holds so far.
type Progress struct{ Seq, Held uint32 }

func (Progress) Type() Type { return TypeProgress }

func (p Progress) Append(b []byte) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, p.Seq), p.Held)
}

func (p *Progress) Decode(b []byte) error {
	d := newDecoder(b)
	p.Seq, p.Held = d.U32(), d.U32()
	return d.finish(TypeProgress)
}

// State is a chunk of the application's state stream.
type State []byte

func (State) Type() Type { return TypeState }

func (s State) Append(b []byte) []byte { return append(b, s...) }

// Decode keeps p: a received payload is the decoder's to keep.
func (s *State) Decode(p []byte) error {
	*s = p
	return nil
}

// StateEnd ends the state stream: its length and CRC-32C (Castagnoli).
type StateEnd struct {
	Total uint64
	CRC   uint32
}

func (StateEnd) Type() Type { return TypeStateEnd }

func (e StateEnd) Append(b []byte) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(b, e.Total), e.CRC)
}

func (e *StateEnd) Decode(p []byte) error {
	d := newDecoder(p)
	e.Total, e.CRC = d.U64(), d.U32()
	return d.finish(TypeStateEnd)
}

// Ready is the new process's readiness: connections adopted, state bytes
// received.
type Ready struct {
	Conns      uint32
	StateBytes uint64
}

func (Ready) Type() Type { return TypeReady }

func (r Ready) Append(b []byte) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(b, r.Conns), r.StateBytes)
}

func (r *Ready) Decode(p []byte) error {
	d := newDecoder(p)
	r.Conns, r.StateBytes = d.U32(), d.U64()
	return d.finish(TypeReady)
}

// CommitPhases is how many phase durations COMMIT carries: start, fds,
// park, parked, state, adopt, commit, in this order.
const CommitPhases = 7

// Commit is the old process's commit, with the record of the upgrade as
// it timed it.
type Commit struct {
	Began      time.Time
	Phases     [CommitPhases]time.Duration
	Conns      uint32
	Early      uint32
	StateBytes uint64
}

func (Commit) Type() Type { return TypeCommit }

func (c Commit) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(c.Began.UnixNano()))
	for _, d := range c.Phases {
		b = binary.BigEndian.AppendUint64(b, uint64(d))
	}
	b = binary.BigEndian.AppendUint32(b, c.Conns)
	b = binary.BigEndian.AppendUint32(b, c.Early)
	return binary.BigEndian.AppendUint64(b, c.StateBytes)
}

func (c *Commit) Decode(p []byte) error {
	d := newDecoder(p)
	c.Began = time.Unix(0, int64(d.U64()))
	for i := range c.Phases {
		c.Phases[i] = time.Duration(d.U64())
	}
	c.Conns, c.Early, c.StateBytes = d.U32(), d.U32(), d.U64()
	return d.finish(TypeCommit)
}

// Abort ends the handoff, saying why.
type Abort struct{ Reason string }

func (Abort) Type() Type { return TypeAbort }

// Append cuts the reason to MaxString bytes, the most a receiver accepts.
func (a Abort) Append(b []byte) []byte {
	return appendString(b, a.Reason[:min(len(a.Reason), MaxString)])
}

func (a *Abort) Decode(p []byte) error {
	d := newDecoder(p)
	a.Reason = d.str()
	return d.finish(TypeAbort)
}

// Final says how many parked connections follow, and how many of them
// were not sent early and so bring their fds now.
type Final struct{ Conns, Late uint32 }

func (Final) Type() Type { return TypeFinal }

func (f Final) Append(b []byte) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, f.Conns), f.Late)
}

func (f *Final) Decode(p []byte) error {
	d := newDecoder(p)
	f.Conns, f.Late = d.U32(), d.U32()
	if d.Err() == nil && f.Late > f.Conns {
		return Errorf("FINAL says %d late connections of %d", f.Late, f.Conns)
	}
	return d.finish(TypeFinal)
}

// Carry is where the chain of upgrades stands: its generation, its start,
// and the values carried from process to process, by name.
type Carry struct {
	Generation uint64
	Start      time.Time
	Values     map[string]float64
}

func (Carry) Type() Type { return TypeCarry }

// Append writes the values sorted by name, so that a CARRY's bytes depend
// on its content alone.
func (v Carry) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, v.Generation)
	b = binary.BigEndian.AppendUint64(b, uint64(v.Start.UnixNano()))
	names := make([]string, 0, len(v.Values))
	for name := range v.Values {
		names = append(names, name)
	}
	sort.Strings(names)
	b = binary.BigEndian.AppendUint16(b, uint16(len(names)))
	for _, name := range names {
		b = appendString(b, name)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(v.Values[name]))
	}
	return b
}

// Decode leaves v zero unless the whole frame is good.
func (v *Carry) Decode(p []byte) error {
	d := newDecoder(p)
	c := Carry{Generation: d.U64(), Start: time.Unix(0, int64(d.U64())), Values: map[string]float64{}}
	n := int(d.U16())
	for i := 0; i < n && d.Err() == nil; i++ {
		name := d.str()
		c.Values[name] = math.Float64frombits(d.U64())
	}
	if err := d.finish(TypeCarry); err != nil {
		*v = Carry{}
		return err
	}
	*v = c
	return nil
}

// Serving says the new process serves and its PID file names it.
type Serving struct{}

func (Serving) Type() Type { return TypeServing }

func (Serving) Append(b []byte) []byte { return b }

func (*Serving) Decode(p []byte) error {
	d := newDecoder(p)
	return d.finish(TypeServing)
}

// End ends a Rolling move: how many connections moved, stayed with the
// old process to drain, and were closed at the deadline.
type End struct{ Moved, Stayed, Closed uint32 }

func (End) Type() Type { return TypeEnd }

func (e End) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, e.Moved)
	b = binary.BigEndian.AppendUint32(b, e.Stayed)
	return binary.BigEndian.AppendUint32(b, e.Closed)
}

func (e *End) Decode(p []byte) error {
	d := newDecoder(p)
	e.Moved, e.Stayed, e.Closed = d.U32(), d.U32(), d.U32()
	return d.finish(TypeEnd)
}
