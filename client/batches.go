package client

import (
	"fmt"
	"time"

	"silt/binformat"
	"silt/segment"
)

// acceptBatches asks for stored batches, and for the binary records form
// from an agent that does not serve them.
const acceptBatches = binformat.BatchesMediaType + ", " + binformat.MediaType + ";q=0.5"

// decodeBatchesFetch decodes a batches response: it verifies each batch
// (CRC-32C), decompresses it (none, gzip, snappy, lz4 or zstd), leaves out
// the records before the offset read from and control batches, and keeps
// at most maxRecords records (0: all), ending the page after the last one
// kept. Keys and values alias body, or the batch's decompressed buffer.
func decodeBatchesFetch(body []byte, partition int32, maxRecords int) (FetchResult, error) {
	f, err := binformat.DecodeBatches(body)
	if err != nil {
		return FetchResult{}, err
	}
	out := FetchResult{NextOffset: f.NextOffset, HighWatermark: f.HighWatermark, LogStartOffset: f.LogStartOffset}
	if f.NextOffset < f.Offset {
		return FetchResult{}, fmt.Errorf("decode response: next offset %d before the offset read %d", f.NextOffset, f.Offset)
	}
	// Room for the records the headers announce, within what the body
	// could hold uncompressed (headers are not trusted for allocations).
	var total int
	for _, raw := range f.Batches {
		if h, err := segment.ParseBatchHeader(raw); err == nil {
			total += int(h.RecordCount)
		}
	}
	total = min(total, len(body)/7)
	if maxRecords > 0 {
		total = min(total, maxRecords)
	}
	out.Records = make([]Record, 0, total)
	last := f.Offset - 1
	for i, raw := range f.Batches {
		b, err := segment.DecodeBatch(raw, segment.DecodeOptions{})
		if err != nil {
			return FetchResult{}, fmt.Errorf("decode response: batch %d: %w", i, err)
		}
		if b.LastOffset() >= f.NextOffset {
			return FetchResult{}, fmt.Errorf("decode response: batch %d ends at %d, past the next offset %d", i, b.LastOffset(), f.NextOffset)
		}
		if b.Control() {
			continue
		}
		for j := range b.Records {
			r := &b.Records[j]
			off := b.BaseOffset + int64(r.OffsetDelta)
			if off < f.Offset {
				continue // before the offset read: the first batch starts earlier
			}
			if off <= last {
				return FetchResult{}, fmt.Errorf("decode response: offset %d after %d", off, last)
			}
			last = off
			ts := r.Timestamp
			if b.LogAppendTime() {
				ts = b.MaxTimestamp
			}
			rec := Record{Partition: partition, Offset: off, Timestamp: time.UnixMilli(ts), Key: r.Key, Value: r.Value}
			if len(r.Headers) > 0 {
				rec.Headers = make([]Header, len(r.Headers))
				for k, h := range r.Headers {
					rec.Headers[k] = Header{Key: h.Key, Value: h.Value}
				}
			}
			out.Records = append(out.Records, rec)
			if maxRecords > 0 && len(out.Records) == maxRecords {
				out.NextOffset = off + 1
				return out, nil
			}
		}
	}
	return out, nil
}
