// Package objectstoretest holds the conformance suite that every
// objectstore backend passes, the suite the S3-protocol backends pass on
// top of it, and Faulty, a fault-injecting Bucket wrapper for the tests of
// packages that use a Bucket.
//
// Contract: Run checks the whole objectstore contract on fresh buckets
// from newBucket, in parallel subtests, so newBucket must be safe for
// concurrent use; RunMissingBucket checks that every call on a bucket that
// does not exist fails with ErrBucketNotExist. The large-object subtest
// streams 64 MiB from a generator and is skipped under -short. RunRemote
// runs the tests every S3-protocol backend (s3, minio) passes against the
// test MinIO of internal/testenv, which fails the test when MinIO is not
// configured and skips it under -short. CheckConfigs runs a backend's
// Config validation table. Faulty is safe for concurrent use.
package objectstoretest
