// Package binformat is the compact binary body of Silt's HTTP produce and
// fetch APIs (media type application/vnd.silt.records.v1), for clients that
// want throughput without JSON. docs/http-binary.md describes the layout.
//
// Contract: all integers are big-endian; lengths of -1 mean null. Decode
// never panics and never reads past its input; the records it returns
// alias the input buffer.
package binformat
