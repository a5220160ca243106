// Package binformat is the compact binary body of Silt's HTTP produce and
// fetch APIs (media type application/vnd.silt.records.v1), for clients that
// want throughput without JSON, and the framing of fetch responses that
// carry stored Kafka RecordBatches as they are (application/
// vnd.silt.batches.v1). docs/http-binary.md describes the layouts.
//
// Contract: all integers are big-endian; lengths of -1 mean null. Decode
// never panics and never reads past its input; the records it returns
// alias the input buffer.
package binformat
