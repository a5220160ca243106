package segment

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these with
// detail (test with errors.Is).
var (
	// ErrCorrupt reports bytes that do not form a valid batch or object:
	// a checksum mismatch, a truncated buffer, a length or varint out of
	// range, a zstd stream that does not decode.
	ErrCorrupt = errors.New("segment: corrupt data")

	// ErrUnsupported reports well-formed input of a kind this package does
	// not handle: a RecordBatch magic other than 2, a compression codec
	// Kafka does not define, an object magic or version it does not know.
	ErrUnsupported = errors.New("segment: unsupported format")

	// ErrTooLarge reports data that exceeds a limit: a records section that
	// decompresses past DecodeOptions.MaxDecompressedSize, or a batch, record
	// or field too large for its Kafka length field.
	ErrTooLarge = errors.New("segment: too large")

	// ErrInvalid reports a caller error: an empty batch, offset deltas that
	// are not strictly increasing, a tail buffer too short, use of a
	// finished Builder.
	ErrInvalid = errors.New("segment: invalid argument")
)
