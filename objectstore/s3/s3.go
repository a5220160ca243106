package s3

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"silt/objectstore"
	"silt/objectstore/internal/backend"
)

var _ objectstore.Bucket = (*Bucket)(nil)

// Config configures an S3 bucket.
type Config struct {
	// Bucket is the S3 bucket name. Required.
	Bucket string
	// Prefix is prepended to every key, as a directory: "logs" and "logs/"
	// both store key "a" as "logs/a". Optional.
	Prefix string
	// Endpoint is the service URL, e.g. "http://127.0.0.1:9000". Empty means
	// AWS's endpoint for Region.
	Endpoint string
	// Region is the signing region. Empty means the AWS configuration
	// (AWS_REGION, shared config), else "us-east-1".
	Region string
	// PathStyle addresses the bucket in the path rather than the host name;
	// MinIO needs it.
	PathStyle bool
	// AccessKey, SecretKey and SessionToken are static credentials. Empty
	// AccessKey means the default AWS credential chain (AWS_ACCESS_KEY_ID
	// and friends, shared config, instance roles).
	AccessKey    string
	SecretKey    string
	SessionToken string
	// PartSize is the multipart part size and the largest body sent in one
	// PutObject. At least 5 MiB.
	PartSize int
	// Concurrency is how many parts one Put uploads at once; a Put buffers
	// at most max(Concurrency, 2) parts.
	Concurrency int
	// UnsignedPayload leaves object bodies out of the request signature
	// (SigV4's UNSIGNED-PAYLOAD): a PUT then costs no SHA-256 of its body.
	// The body is still covered by a CRC32 checksum the service verifies;
	// what signing adds is protection against tampering in transit, which
	// TLS gives already. Over plain http it lets anyone on the path alter a
	// body undetected, so use it there only on a network you trust (a
	// local MinIO).
	UnsignedPayload bool
}

// DefaultConfig returns the defaults: 8 MiB parts, 4 in flight.
func DefaultConfig() Config {
	return Config{PartSize: backend.DefaultPartSize, Concurrency: backend.DefaultConcurrency}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	return c.shared().Validate(c.checkEndpoint)
}

// shared returns the settings every S3-protocol backend has.
func (c Config) shared() backend.Config {
	return backend.Config{Scheme: "s3", Bucket: c.Bucket, Prefix: c.Prefix,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, SessionToken: c.SessionToken,
		PartSize: c.PartSize, Concurrency: c.Concurrency}
}

// checkEndpoint accepts an empty Endpoint or an http(s) URL with a host.
func (c Config) checkEndpoint() error {
	if c.Endpoint == "" {
		return nil
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint %q must be an http or https URL with a host", c.Endpoint)
	}
	return nil
}

// Bucket is an S3 bucket, or a prefix of one: the S3-protocol
// backend.Bucket over aws-sdk-go-v2.
type Bucket = backend.Bucket[types.CompletedPart]

// New returns a Bucket for cfg. It makes no request: a missing bucket shows
// as ErrBucketNotExist on the first call.
func New(ctx context.Context, cfg Config) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS config: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	c := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.PathStyle
		// Ranged reads and multipart objects carry no checksum the SDK can
		// verify; that is expected, not worth a log line per read.
		o.DisableLogOutputChecksumValidationSkipped = true
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	cl := &client{s3: c, bucket: cfg.Bucket, unsigned: cfg.UnsignedPayload}
	if cfg.UnsignedPayload {
		cl.putOpts = append(cl.putOpts, func(o *s3.Options) {
			o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
		})
	}
	return backend.New(cfg.shared(), cl)
}

// client implements backend.Client with aws-sdk-go-v2.
type client struct {
	s3     *s3.Client
	bucket string
	// putOpts apply to the requests that carry object bodies.
	putOpts []func(*s3.Options)
	// unsigned: bodies go unsigned, with a CRC32 computed here (see
	// bodyCRC32).
	unsigned bool
}

// bodyCRC32 is the x-amz-checksum-crc32 of body when bodies go unsigned,
// else nil (the SDK computes it). Given in advance, it keeps the SDK's
// checksum middleware from reading the body: over plain http that
// middleware hashes the body with SHA-256 for the signature in the same
// pass, and the payload hash it leaves behind wins over UNSIGNED-PAYLOAD,
// so the body would be hashed and signed after all.
func (c *client) bodyCRC32(body []byte) *string {
	if !c.unsigned {
		return nil
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.ChecksumIEEE(body))
	return aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// ErrorCode reads the API error code and the HTTP status of err.
func (c *client) ErrorCode(err error) (string, int) {
	code := ""
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

// HeadNotFound reports a NotFound error or a 404.
func (c *client) HeadNotFound(err error) bool {
	var nf *types.NotFound
	if errors.As(err, &nf) {
		return true
	}
	var re interface{ HTTPStatusCode() int }
	return errors.As(err, &re) && re.HTTPStatusCode() == 404
}

// BucketMissing sends a HeadBucket.
func (c *client) BucketMissing(ctx context.Context) bool {
	_, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &c.bucket})
	return err != nil && c.HeadNotFound(err)
}

// Upload uses PutObject for one part, else a multipart upload.
func (c *client) Upload(key string, ifNotExists bool) backend.Multipart[types.CompletedPart] {
	up := &upload{c: c, key: key}
	if ifNotExists {
		up.ifNoneMatch = aws.String("*")
	}
	return up
}

// upload implements backend.Multipart for one key.
type upload struct {
	c           *client
	key         string
	ifNoneMatch *string
}

func (u *upload) PutSingle(ctx context.Context, body []byte) error {
	_, err := u.c.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &u.c.bucket,
		Key:           &u.key,
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		IfNoneMatch:   u.ifNoneMatch,
		// A checksum the service verifies, cheap beside a SHA-256.
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		ChecksumCRC32:     u.c.bodyCRC32(body),
	}, u.c.putOpts...)
	return err
}

func (u *upload) Create(ctx context.Context) (string, error) {
	out, err := u.c.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:            &u.c.bucket,
		Key:               &u.key,
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.UploadId), nil
}

func (u *upload) UploadPart(ctx context.Context, uploadID string, n int, body []byte) (types.CompletedPart, error) {
	out, err := u.c.s3.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:            &u.c.bucket,
		Key:               &u.key,
		UploadId:          &uploadID,
		PartNumber:        aws.Int32(int32(n)),
		Body:              bytes.NewReader(body),
		ContentLength:     aws.Int64(int64(len(body))),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		ChecksumCRC32:     u.c.bodyCRC32(body),
	}, u.c.putOpts...)
	if err != nil {
		return types.CompletedPart{}, err
	}
	return types.CompletedPart{
		PartNumber:    aws.Int32(int32(n)),
		ETag:          out.ETag,
		ChecksumCRC32: out.ChecksumCRC32,
	}, nil
}

func (u *upload) Complete(ctx context.Context, uploadID string, parts []types.CompletedPart) error {
	_, err := u.c.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &u.c.bucket,
		Key:             &u.key,
		UploadId:        &uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfNoneMatch:     u.ifNoneMatch,
	})
	return err
}

func (u *upload) Abort(ctx context.Context, uploadID string) error {
	_, err := u.c.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   &u.c.bucket,
		Key:      &u.key,
		UploadId: &uploadID,
	})
	return err
}

// Get sends a GetObject.
func (c *client) Get(ctx context.Context, key, rng string) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: &c.bucket, Key: &key}
	if rng != "" {
		in.Range = &rng
	}
	out, err := c.s3.GetObject(ctx, in)
	if err != nil {
		return nil, err
	}
	return out.Body, nil
}

// Head sends a HeadObject.
func (c *client) Head(ctx context.Context, key string) (objectstore.ObjectInfo, error) {
	out, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &c.bucket, Key: &key})
	if err != nil {
		return objectstore.ObjectInfo{}, err
	}
	return objectstore.ObjectInfo{Size: aws.ToInt64(out.ContentLength), LastModified: aws.ToTime(out.LastModified)}, nil
}

// List pages through ListObjectsV2.
func (c *client) List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error {
	p := s3.NewListObjectsV2Paginator(c.s3, &s3.ListObjectsV2Input{Bucket: &c.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			err := fn(objectstore.ObjectInfo{
				Key:          aws.ToString(o.Key),
				Size:         aws.ToInt64(o.Size),
				LastModified: aws.ToTime(o.LastModified),
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete sends a DeleteObject; S3 reports success for a missing key.
func (c *client) Delete(ctx context.Context, key string) error {
	_, err := c.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &c.bucket, Key: &key})
	return err
}
