package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
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
}

// DefaultConfig returns the defaults: 8 MiB parts, 4 in flight.
func DefaultConfig() Config {
	return Config{PartSize: backend.DefaultPartSize, Concurrency: backend.DefaultConcurrency}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Bucket == "" {
		return errors.New("s3 config: bucket is required")
	}
	if strings.ContainsAny(c.Bucket, "/ ") {
		return fmt.Errorf("s3 config: invalid bucket name %q", c.Bucket)
	}
	if _, err := backend.CleanPrefix(c.Prefix); err != nil {
		return fmt.Errorf("s3 config: %w", err)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil {
			return fmt.Errorf("s3 config: endpoint: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("s3 config: endpoint %q must be an http or https URL with a host", c.Endpoint)
		}
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("s3 config: set both access key and secret key, or neither")
	}
	if c.SessionToken != "" && c.AccessKey == "" {
		return errors.New("s3 config: session token without access key")
	}
	if c.PartSize < backend.MinPartSize || c.PartSize > 5<<30 {
		return fmt.Errorf("s3 config: part size %d outside [5 MiB, 5 GiB]", c.PartSize)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("s3 config: concurrency %d must be at least 1", c.Concurrency)
	}
	return nil
}

// Bucket is an S3 bucket, or a prefix of one.
type Bucket struct {
	client   *s3.Client
	bucket   string
	prefix   string // "" or ends in "/"
	uploader *backend.Uploader
}

// New returns a Bucket for cfg. It makes no request: a missing bucket shows
// as ErrBucketNotExist on the first call.
func New(ctx context.Context, cfg Config) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prefix, _ := backend.CleanPrefix(cfg.Prefix)
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
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.PathStyle
		// Ranged reads and multipart objects carry no checksum the SDK can
		// verify; that is expected, not worth a log line per read.
		o.DisableLogOutputChecksumValidationSkipped = true
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	up, err := backend.NewUploader(cfg.PartSize, cfg.Concurrency)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	return &Bucket{client: client, bucket: cfg.Bucket, prefix: prefix, uploader: up}, nil
}

// Name returns "s3://bucket" or "s3://bucket/prefix".
func (b *Bucket) Name() string {
	if b.prefix == "" {
		return "s3://" + b.bucket
	}
	return "s3://" + b.bucket + "/" + strings.TrimSuffix(b.prefix, "/")
}

// Capabilities reports conditional put support (If-None-Match).
func (b *Bucket) Capabilities() objectstore.Capabilities {
	return objectstore.Capabilities{ConditionalPut: true}
}

// start checks ctx and key, and returns the full object key.
func (b *Bucket) start(ctx context.Context, op, key string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("s3 %s %s: %w", op, key, err)
	}
	if err := objectstore.ValidateKey(key); err != nil {
		return "", fmt.Errorf("s3 %s: %w", op, err)
	}
	return b.prefix + key, nil
}

// mapErr wraps err with the operation, key and the objectstore sentinel it
// stands for, keeping err in the chain.
func mapErr(op, key string, err error) error {
	var sentinel error
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
	switch {
	case code == "NoSuchBucket":
		sentinel = objectstore.ErrBucketNotExist
	case code == "NoSuchKey":
		sentinel = objectstore.ErrNotExist
	case code == "PreconditionFailed" || status == 412:
		sentinel = objectstore.ErrExists
	case code == "InvalidRange" || status == 416:
		sentinel = objectstore.ErrInvalidRange
	}
	if sentinel != nil {
		return fmt.Errorf("s3 %s %s: %w: %w", op, key, sentinel, err)
	}
	return fmt.Errorf("s3 %s %s: %w", op, key, err)
}

func isNotFound(err error) bool {
	var nf *types.NotFound
	if errors.As(err, &nf) {
		return true
	}
	var re interface{ HTTPStatusCode() int }
	return errors.As(err, &re) && re.HTTPStatusCode() == 404
}

// headMissing maps a 404 from HeadObject, which has no body and so no error
// code, to ErrNotExist or, after a HeadBucket, ErrBucketNotExist.
func (b *Bucket) headMissing(ctx context.Context, op, key string, err error) error {
	if _, berr := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &b.bucket}); berr != nil && isNotFound(berr) {
		return fmt.Errorf("s3 %s %s: bucket %s: %w: %w", op, key, b.bucket, objectstore.ErrBucketNotExist, err)
	}
	return fmt.Errorf("s3 %s %s: %w: %w", op, key, objectstore.ErrNotExist, err)
}

// Put uploads r: one PutObject when it fits in a part, else multipart.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) error {
	full, err := b.start(ctx, "put", key)
	if err != nil {
		return err
	}
	if err := backend.CheckSize(size); err != nil {
		return fmt.Errorf("s3 put %s: %w", key, err)
	}
	var ifNoneMatch *string
	if opts.IfNotExists {
		ifNoneMatch = aws.String("*")
	}
	up := &upload{b: b, key: full, ifNoneMatch: ifNoneMatch}
	if err := backend.Upload(ctx, b.uploader, up, r, size); err != nil {
		return mapErr("put", key, err)
	}
	return nil
}

// upload implements backend.Multipart for one key.
type upload struct {
	b           *Bucket
	key         string
	ifNoneMatch *string
}

func (u *upload) PutSingle(ctx context.Context, body []byte) error {
	_, err := u.b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &u.b.bucket,
		Key:           &u.key,
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		IfNoneMatch:   u.ifNoneMatch,
	})
	return err
}

func (u *upload) Create(ctx context.Context) (string, error) {
	out, err := u.b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:            &u.b.bucket,
		Key:               &u.key,
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.UploadId), nil
}

func (u *upload) UploadPart(ctx context.Context, uploadID string, n int, body []byte) (types.CompletedPart, error) {
	out, err := u.b.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:            &u.b.bucket,
		Key:               &u.key,
		UploadId:          &uploadID,
		PartNumber:        aws.Int32(int32(n)),
		Body:              bytes.NewReader(body),
		ContentLength:     aws.Int64(int64(len(body))),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
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
	_, err := u.b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &u.b.bucket,
		Key:             &u.key,
		UploadId:        &uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfNoneMatch:     u.ifNoneMatch,
	})
	return err
}

func (u *upload) Abort(ctx context.Context, uploadID string) error {
	_, err := u.b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   &u.b.bucket,
		Key:      &u.key,
		UploadId: &uploadID,
	})
	return err
}

// Get opens the whole object.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	full, err := b.start(ctx, "get", key)
	if err != nil {
		return nil, err
	}
	return b.get(ctx, "get", key, full, nil)
}

// GetRange opens part of the object with a Range header.
func (b *Bucket) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	full, err := b.start(ctx, "get range", key)
	if err != nil {
		return nil, err
	}
	if err := backend.CheckRange(offset, length); err != nil {
		return nil, fmt.Errorf("s3 get range %s: %w", key, err)
	}
	rng := "bytes=" + strconv.FormatInt(offset, 10) + "-"
	if length > 0 {
		rng += strconv.FormatInt(offset+length-1, 10)
	}
	return b.get(ctx, "get range", key, full, &rng)
}

func (b *Bucket) get(ctx context.Context, op, key, full string, rng *string) (io.ReadCloser, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: &full, Range: rng})
	if err != nil {
		return nil, mapErr(op, key, err)
	}
	return backend.CtxReadCloser{Ctx: ctx, R: out.Body}, nil
}

// Stat heads the object.
func (b *Bucket) Stat(ctx context.Context, key string) (objectstore.ObjectInfo, error) {
	full, err := b.start(ctx, "stat", key)
	if err != nil {
		return objectstore.ObjectInfo{}, err
	}
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &full})
	if err != nil {
		if isNotFound(err) && ctx.Err() == nil {
			return objectstore.ObjectInfo{}, b.headMissing(ctx, "stat", key, err)
		}
		return objectstore.ObjectInfo{}, mapErr("stat", key, err)
	}
	return objectstore.ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		LastModified: aws.ToTime(out.LastModified),
	}, nil
}

// List pages through ListObjectsV2.
func (b *Bucket) List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3 list %s: %w", prefix, err)
	}
	full := b.prefix + prefix
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: &full})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return mapErr("list", prefix, err)
		}
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if !strings.HasPrefix(k, b.prefix) {
				continue
			}
			err := fn(objectstore.ObjectInfo{
				Key:          strings.TrimPrefix(k, b.prefix),
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

// Delete removes the object; S3 reports success for a missing key.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	full, err := b.start(ctx, "delete", key)
	if err != nil {
		return err
	}
	if _, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.bucket, Key: &full}); err != nil {
		return mapErr("delete", key, err)
	}
	return nil
}
