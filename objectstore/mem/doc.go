// Package mem is an in-memory objectstore.Bucket for unit tests.
//
// Contract: it implements the objectstore contract in full, including
// conditional Put, and is safe for concurrent use. Put copies the body
// into fresh memory (in chunks of at most 1 MiB) before the object becomes
// visible; the readers of Get and GetRange copy out of that immutable
// memory into the caller's buffers, so callers never share memory with the
// store, and a reader keeps reading the version it opened even if the key
// is overwritten or deleted. A mem bucket always exists, so it never
// returns ErrBucketNotExist. Nothing is persisted.
package mem
