package wire

import "encoding/binary"

const (
	maxParkedRecs = 4096               // records in a PARKED frame, which carries no fds
	maxRecordHead = 8 + 2 + 4 + 4 + 16 // a record's fixed part, with slack
	// MaxClosedIDs is how many ids a CLOSED frame carries at most.
	MaxClosedIDs = 4096
)

// Record is one connection in a CONNS or PARKED frame; in CONNS its fd
// travels in SCM_RIGHTS at the same index.
type Record struct {
	ID     uint64
	Kind   string
	Unread []byte
	State  []byte
}

// Size is about what r takes in a frame, for cutting frames near
// MaxBatchBytes.
func (r Record) Size() int { return maxRecordHead + len(r.Kind) + len(r.Unread) + len(r.State) }

// MaxRecords is how many records a frame of type t may carry: one per fd
// in CONNS, more in PARKED.
func MaxRecords(t Type) int {
	if t == TypeParked {
		return maxParkedRecs
	}
	return MaxFdsPerMsg
}

// Conns is a CONNS frame: connections with their fds attached, record i
// with fd i.
type Conns struct {
	Seq     uint32 // counts CONNS and PARKED frames together
	Records []Record
}

func (Conns) Type() Type { return TypeConns }

func (c Conns) Append(b []byte) []byte { return appendRecords(b, c.Seq, c.Records) }

func (c *Conns) Decode(p []byte) error {
	var err error
	c.Seq, c.Records, err = decodeRecords(TypeConns, p)
	return err
}

// Parked is a PARKED frame: the unread bytes and state of connections
// whose fds went early, by id, without fds.
type Parked Conns

func (Parked) Type() Type { return TypeParked }

func (c Parked) Append(b []byte) []byte { return appendRecords(b, c.Seq, c.Records) }

func (c *Parked) Decode(p []byte) error {
	var err error
	c.Seq, c.Records, err = decodeRecords(TypeParked, p)
	return err
}

// Batch is the frame of type t (CONNS or PARKED) carrying recs, for a
// sender that sends both alike.
func Batch(t Type, seq uint32, recs []Record) Encoder {
	if t == TypeParked {
		return Parked{Seq: seq, Records: recs}
	}
	return Conns{Seq: seq, Records: recs}
}

func appendRecords(b []byte, seq uint32, recs []Record) []byte {
	b = binary.BigEndian.AppendUint32(b, seq)
	b = binary.BigEndian.AppendUint16(b, uint16(len(recs)))
	for _, r := range recs {
		b = binary.BigEndian.AppendUint64(b, r.ID)
		b = appendString(b, r.Kind)
		b = appendBytes(b, r.Unread)
		b = appendBytes(b, r.State)
	}
	return b
}

// decodeRecords decodes a CONNS or PARKED frame (t): both carry records.
func decodeRecords(t Type, p []byte) (seq uint32, recs []Record, err error) {
	d := newDecoder(p)
	seq = d.U32()
	n := int(d.U16())
	if most := MaxRecords(t); n > most {
		return 0, nil, Errorf("%s frame claims %d connections, at most %d fit", t, n, most)
	}
	recs = make([]Record, 0, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		recs = append(recs, Record{ID: d.U64(), Kind: d.str(), Unread: d.bytes(), State: d.bytes()})
	}
	return seq, recs, d.finish(t)
}

// Closed names early connections the old process has closed during a
// Rolling move: the new process closes its copies.
type Closed struct{ IDs []uint64 }

func (Closed) Type() Type { return TypeClosed }

func (c Closed) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.IDs)))
	for _, id := range c.IDs {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	return b
}

// Decode allocates the ids only once their count matches the bytes.
func (c *Closed) Decode(p []byte) error {
	d := newDecoder(p)
	n := d.U32()
	if d.Err() == nil && (n == 0 || n > MaxClosedIDs || int(n)*8 != d.Len()) {
		c.IDs = nil
		return Errorf("CLOSED with %d ids in %d bytes", n, d.Len())
	}
	c.IDs = make([]uint64, n)
	for i := range c.IDs {
		c.IDs[i] = d.U64()
	}
	return d.finish(TypeClosed)
}
