// Package objectstore defines the Bucket contract that every Silt object
// store backend implements, the sentinel errors they return, and wrappers
// (metrics, key prefix) that compose over any backend.
//
// Contract:
//   - Keys are slash-separated strings without a leading slash. Every
//     backend rejects, with ErrInvalidKey, a key that ValidateKey rejects:
//     empty, a leading or trailing slash, an empty, "." or ".." segment, or
//     a NUL byte, so a key that works on one backend works on all.
//   - Put stores the whole object atomically: readers see the old object,
//     no object, or the new object, never a partial one. A Put whose reader
//     ends early, fails, or whose ctx is cancelled stores nothing.
//   - With PutOptions.IfNotExists, Put fails with ErrExists when the key is
//     already present, on backends whose Capabilities report
//     ConditionalPut; other backends overwrite. Of concurrent conditional
//     Puts of one key, exactly one succeeds.
//   - Get and GetRange of a missing key fail with ErrNotExist. GetRange
//     reads length bytes from offset; a range that runs past the end is cut
//     at the end of the object; an offset at or past the end fails with
//     ErrInvalidRange (so does any range of an empty object). A negative
//     length reads to the end; a zero length or a negative offset fails
//     with ErrInvalidRange.
//   - Delete of a missing key succeeds.
//   - List walks keys with the prefix in lexical (byte) order. The prefix
//     is a plain string prefix, not a directory: "a/b" matches "a/b" and
//     "a/bc/d".
//   - A bucket that does not exist makes every call fail with
//     ErrBucketNotExist.
//   - Every call honours ctx cancellation: a cancelled ctx fails the call
//     with an error for which errors.Is(err, ctx.Err()) holds.
//   - Errors wrap the sentinels with context (backend, operation, key):
//     test them with errors.Is.
//
// The subpackages s3, minio, file and mem hold the backends; bucketurl
// opens one from a URL; objectstoretest holds the conformance suite that
// every backend passes and a fault-injecting wrapper for other tests.
package objectstore
