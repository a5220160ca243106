// Package objectstoretest holds the conformance suite that every
// objectstore backend passes, and Faulty, a fault-injecting Bucket wrapper
// for the tests of packages that use a Bucket.
//
// Contract: Run checks the whole objectstore contract on fresh buckets
// from newBucket, in parallel subtests, so newBucket must be safe for
// concurrent use; RunMissingBucket checks that every call on a bucket that
// does not exist fails with ErrBucketNotExist. The large-object subtest
// streams 64 MiB from a generator and is skipped under -short. Faulty is
// safe for concurrent use.
package objectstoretest
