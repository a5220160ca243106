// Package s3 is an objectstore.Bucket on Amazon S3 or any S3-compatible
// service (MinIO included), built on aws-sdk-go-v2.
//
// Contract: it implements the objectstore contract in full. Keys live under
// Config.Prefix in Config.Bucket. Put buffers at most Config.PartSize bytes
// for a body that fits in one part and sends it with one PutObject; a larger
// or unknown-size body streams through a multipart upload holding at most
// Config.Concurrency parts in memory, and a failed or cancelled multipart
// Put is aborted so nothing becomes visible. Conditional Put sends
// If-None-Match: * (on PutObject or CompleteMultipartUpload); 412 maps to
// objectstore.ErrExists. GetRange sends a Range header; 416 maps to
// objectstore.ErrInvalidRange. List pages through ListObjectsV2. NoSuchKey
// and NoSuchBucket map to ErrNotExist and ErrBucketNotExist; a 404 to a
// HEAD, which carries no error code, is told apart with a HeadBucket.
// Errors keep the SDK error in their chain as well as the sentinel.
package s3
