// Package segment encodes and decodes Silt segment objects. It is pure: no
// I/O, no goroutines, and no dependency on other Silt packages.
//
// # Objects and chunks
//
// A segment object is an 8-byte header, a sequence of chunks, a footer index
// with one entry per chunk, and a 12-byte trailer. Each chunk is exactly one
// Kafka RecordBatch v2 (magic 2), byte-compatible with Kafka, so a chunk can
// be served to Kafka clients unchanged. The byte layout is specified in
// docs/segment-format.md.
//
// Build an object with a Builder (Add encodes records, AddRaw copies an
// already-encoded batch) and Finish. Read one with ParseObject when the whole
// object is in memory, or by range-reading its tail: TailSize on the last
// TrailerSize (or more) bytes says how many trailing bytes hold the index,
// and ReadFooter parses them. Slice a chunk out with ChunkRef.Bytes (or a
// range read of Offset, Length) and decode it with DecodeBatch, or inspect
// its header alone with ParseBatchHeader.
//
// # Contract
//
//   - Base offsets: Silt writes every batch with baseOffset 0. The real base
//     offset of a chunk lives outside the object (in the metadata store) and
//     is written into the chunk with SetBaseOffset before the chunk is
//     served. The CRC does not cover baseOffset or partitionLeaderEpoch
//     (written as -1; SetPartitionLeaderEpoch patches it), so patching keeps
//     the batch valid. Offsets of records are BaseOffset + OffsetDelta.
//   - Records: OffsetDelta must be >= 0 and strictly increasing within a
//     batch; lastOffsetDelta is the last record's. baseTimestamp is the first
//     record's timestamp, maxTimestamp the largest; timestamp deltas may be
//     negative. Timestamps are CreateTime (Unix milliseconds).
//   - Null versus empty: a nil Key, Value or header Value is encoded as
//     length -1 (null) and decodes back to nil; an empty non-nil slice is
//     encoded as length 0 and decodes to an empty non-nil slice. A nil Value
//     is a tombstone. A record without headers decodes with Headers nil.
//   - Producer fields: producerId, producerEpoch and baseSequence are -1
//     unless BatchOptions.Idempotent is set.
//   - Compression: none or zstd (Kafka codec 4), applied to the records
//     section as a whole, when Silt encodes. Batches that Kafka clients sent
//     are stored as they came, so decoding also reads gzip, snappy (a bare
//     block or snappy-java's framing) and lz4 (the LZ4 frame format);
//     unknown codecs yield ErrUnsupported. Decompression is bounded by DecodeOptions.MaxDecompressedSize (default
//     64 MiB); beyond it decoding fails with ErrTooLarge.
//   - Validation: DecodeBatch verifies magic, batch length and CRC-32C, then
//     every varint and length of every record, and never panics on any
//     input. ReadFooter and ParseObject verify the trailer, the footer
//     CRC-32C and that the chunks exactly tile the object; they never panic
//     either. ParseObject does not verify chunk CRCs (VerifyBatch does).
//   - Errors wrap one of ErrCorrupt, ErrUnsupported, ErrTooLarge or
//     ErrInvalid; test with errors.Is.
//   - Aliasing: decoded keys, values and header values alias the chunk
//     (uncompressed) or a buffer owned by the Batch (compressed) and are
//     valid until the next Batch.Decode on the same Batch. Header keys are
//     strings. Builder.Finish returns slices owned by the Builder, valid until
//     Builder.Reset.
//   - Concurrency: an Encoder or a Builder is for one goroutine at a time;
//     keep one per flushing goroutine. DecodeBatch, ParseBatchHeader,
//     VerifyBatch, ReadFooter and ParseObject are safe for concurrent use
//     (zstd decoding uses shared decoders); a Batch used with Decode is not
//     shared.
package segment
