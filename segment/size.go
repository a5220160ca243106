package segment

import "unsafe"

// maxRecordOverhead is the most bytes of a record that do not depend on
// its key, value and headers: its length prefix (a varint, up to 5
// bytes), attributes (1), timestamp delta (a varlong, up to 10) and offset
// delta (a varint, up to 5). Kafka's DefaultRecord.MAX_RECORD_OVERHEAD.
const maxRecordOverhead = 5 + 1 + 10 + 5

// RecordSize is the most bytes r takes in a RecordBatch v2: its key,
// value, header count and headers as they are encoded (varint lengths,
// a null counting one byte) plus the length prefix, attributes and deltas
// at their widest, so that the size does not depend on the record's place
// in a batch (Kafka's DefaultRecord.recordSizeUpperBound). Every limit on
// record bytes uses it: the record limit (max.message.bytes), fetch
// max_bytes and, through RecordMemory, every memory bound. An empty header
// costs 2 bytes here, never 0.
func RecordSize(r *Record) int64 {
	n := int64(maxRecordOverhead) + fieldSize(r.Key) + fieldSize(r.Value) + int64(varintLen(int64(len(r.Headers))))
	for i := range r.Headers {
		h := &r.Headers[i]
		n += int64(varintLen(int64(len(h.Key)))+len(h.Key)) + fieldSize(h.Value)
	}
	return n
}

func fieldSize(b []byte) int64 {
	if b == nil {
		return 1
	}
	return int64(varintLen(int64(len(b))) + len(b))
}

// Memory overheads of a decoded or parsed record besides its bytes: the
// Record itself, and per header a Header and a header-key end offset (see
// Batch).
const (
	recordOverhead = int64(unsafe.Sizeof(Record{}))
	headerOverhead = int64(unsafe.Sizeof(Header{}) + unsafe.Sizeof(0))
)

// RecordMemory is what r holds in memory, decoded or parsed: RecordSize
// plus its Record and Header structs. The memory bounds (the batcher's
// buffer, the decoded-chunk cache, fetch responses in flight) charge it,
// so that a record of many tiny headers (40-odd bytes each in memory, 2 on
// the wire) is charged for what it holds.
func RecordMemory(r *Record) int64 {
	return RecordSize(r) + recordOverhead + int64(len(r.Headers))*headerOverhead
}
