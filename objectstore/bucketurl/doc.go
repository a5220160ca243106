// Package bucketurl opens an objectstore.Bucket from a URL:
//
//	s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1
//	minio://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1
//	file:///absolute/path
//	mem://[name]
//
// Contract: s3 uses the AWS SDK's default credential chain
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, shared
// config, ...), its region unless region= is given, and path-style
// addressing when endpoint= is given. minio needs endpoint= (http:// or
// https://, which sets TLS), takes region= (default us-east-1), and reads
// credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (with
// AWS_SESSION_TOKEN), else MINIO_ACCESS_KEY/MINIO_SECRET_KEY, and fails
// when neither pair is set. file needs an absolute path and creates the
// directory if missing. mem opens a new, empty bucket on every call. A path
// after the bucket is a key prefix. Unknown schemes, unknown query
// parameters, credentials in the URL and malformed URLs are errors that
// wrap ErrBadURL. Opening makes no network request.
package bucketurl
