// Package minio is an objectstore.Bucket on MinIO (or any S3-compatible
// service), built on minio-go/v7.
//
// Contract: it implements the objectstore contract in full, including
// conditional Put (If-None-Match: *, which minio-go sends with
// PutObjectOptions.SetMatchETagExcept). Keys live under Config.Prefix in
// Config.Bucket. Put buffers at most Config.PartSize bytes for a body that
// fits in one part and sends one PUT; a larger or unknown-size body streams
// through a multipart upload (minio-go's Core API) holding at most
// Config.Concurrency parts in memory, and a failed or cancelled multipart
// Put is aborted so nothing becomes visible and no parts are left. minio-go
// error responses map to the objectstore sentinels (NoSuchKey, NoSuchBucket,
// 412, 416); a not-found Stat is told apart from a missing bucket with a
// BucketExists call. Errors keep the minio-go error in their chain.
package minio
