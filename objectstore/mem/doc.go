// Package mem is an in-memory objectstore.Bucket for unit tests.
//
// Contract: it implements the objectstore contract in full, including
// conditional Put, and is safe for concurrent use. Put copies the data in
// before the object becomes visible and Get hands out copies, so callers
// never share memory with the store. A mem bucket always exists, so it
// never returns ErrBucketNotExist. Nothing is persisted.
package mem
