package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"silt/binformat"
	"silt/recordjson"
)

// Header is a record header; a nil Value is null.
type Header struct {
	Key   string
	Value []byte
}

// Record is a record read from a partition. A nil Key or Value is null,
// distinct from empty.
type Record struct {
	Partition int32
	Offset    int64
	Timestamp time.Time
	Key       []byte
	Value     []byte
	Headers   []Header
}

// Message is a record to produce. A nil Key or Value is null.
type Message struct {
	// Partition, when set (see the Partition func), is where the record
	// goes; otherwise a non-empty Key picks the partition by murmur2 and
	// keyless records of one request share one partition.
	Partition *int32
	// Timestamp, when not zero, is the record's time; otherwise the
	// agent's receive time.
	Timestamp time.Time
	Key       []byte
	Value     []byte
	Headers   []Header
}

// Partition returns a pointer to p, for Message.Partition.
func Partition(p int32) *int32 { return &p }

func messageJSON(m *Message) recordjson.Record {
	var j recordjson.Record
	j.Partition = m.Partition
	if !m.Timestamp.IsZero() {
		ts := m.Timestamp.UnixMilli()
		j.Timestamp = &ts
	}
	j.Key, j.KeyB64 = recordjson.Encode(m.Key)
	j.Value, j.ValueB64 = recordjson.Encode(m.Value)
	for _, h := range m.Headers {
		hj := recordjson.Header{Key: h.Key}
		hj.Value, hj.ValueB64 = recordjson.Encode(h.Value)
		j.Headers = append(j.Headers, hj)
	}
	return j
}

// recordFrom converts a fetched JSON record.
func recordFrom(j *recordjson.Record, partition int32) (Record, error) {
	var r Record
	var err error
	r.Partition = partition
	if j.Offset == nil {
		return r, fmt.Errorf("record without an offset")
	}
	r.Offset = *j.Offset
	if j.Timestamp != nil {
		r.Timestamp = time.UnixMilli(*j.Timestamp)
	}
	if r.Key, err = recordjson.Decode("key", j.Key, j.KeyB64); err != nil {
		return r, fmt.Errorf("record %d: %w", r.Offset, err)
	}
	if r.Value, err = recordjson.Decode("value", j.Value, j.ValueB64); err != nil {
		return r, fmt.Errorf("record %d: %w", r.Offset, err)
	}
	if len(j.Headers) > 0 {
		r.Headers = make([]Header, len(j.Headers))
		for i, h := range j.Headers {
			v, err := recordjson.Decode("value", h.Value, h.ValueB64)
			if err != nil {
				return r, fmt.Errorf("record %d: header %d: %w", r.Offset, i, err)
			}
			r.Headers[i] = Header{Key: h.Key, Value: v}
		}
	}
	return r, nil
}

// binaryRecord converts a message for binformat.
func binaryRecord(m *Message) binformat.Record {
	r := binformat.Record{Partition: -1, Timestamp: -1, Key: m.Key, Value: m.Value}
	if m.Partition != nil {
		r.Partition = *m.Partition
	}
	if !m.Timestamp.IsZero() {
		r.Timestamp = m.Timestamp.UnixMilli()
	}
	if len(m.Headers) > 0 {
		r.Headers = make([]binformat.Header, len(m.Headers))
		for i, h := range m.Headers {
			r.Headers[i] = binformat.Header{Key: h.Key, Value: h.Value}
		}
	}
	return r
}

// fromBinary converts a fetched binformat record. Its bytes stay in the
// response buffer, which nothing else uses.
func fromBinary(r *binformat.Record, partition int32) Record {
	out := Record{
		Partition: partition,
		Offset:    r.Offset,
		Timestamp: time.UnixMilli(r.Timestamp),
		Key:       r.Key,
		Value:     r.Value,
	}
	if len(r.Headers) > 0 {
		out.Headers = make([]Header, len(r.Headers))
		for i, h := range r.Headers {
			out.Headers[i] = Header{Key: h.Key, Value: h.Value}
		}
	}
	return out
}

// marshalJSON encodes v without HTML escaping, so JSON text carried as a
// record's bytes reaches the agent unchanged.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
