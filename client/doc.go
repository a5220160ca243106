// Package client is a Go client for Silt's HTTP API: topics, produce
// (JSON and the binary body of package binformat), fetch, offsets, the
// server-sent-events live tail, and an idempotent producer.
//
// Contract:
//
//   - Every method takes a context first and does its I/O under it.
//   - Keys, values and header values are []byte and round-trip exactly:
//     nil is null and distinct from empty. Produce sends bytes that are
//     compact, valid JSON as JSON and everything else as base64; Fetch asks
//     for the stored batches by default (application/vnd.silt.batches.v1)
//     and decodes them here: CRC-checked, decompressed with any of Kafka's
//     codecs, the records before the offset asked for left out.
//   - A non-2xx response becomes a *Error carrying the problem fields
//     (Status, Code, Detail, Retriable, RetryAfter, and the offsets of an
//     offset_out_of_range answer). Methods wrap it with what they were
//     doing; use errors.As or IsCode to inspect it.
//   - Automatic retries are off by default. WithRetry enables them for
//     errors the agent marks retriable (429, 503), honouring Retry-After,
//     bounded in attempts and in total time. Transport failures are
//     retried only for requests that are safe to repeat: reads, and
//     produce requests that carry a producer id and sequences. A plain
//     Produce retried after a 503 is at-least-once.
//   - Stream follows a partition and reconnects with Last-Event-ID when
//     the connection drops, until its context ends.
//   - IdempotentProducer partitions exactly like the agent, numbers
//     records per partition and resends a failed request with the same
//     sequences, so a retry never writes a record twice.
//
// The package depends on binformat, partitioner and segment (to decode
// RecordBatches) only; it defines its own request and response types
// matching the JSON of the API.
package client
