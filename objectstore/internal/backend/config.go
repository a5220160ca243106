package backend

import (
	"errors"
	"fmt"
	"strings"
)

// MaxPartSize is the largest S3 multipart part, and the largest body the
// S3-protocol backends send in one request.
const MaxPartSize = 5 << 30

// Config is the configuration that the S3-protocol backends share. Each
// backend's own Config carries these fields under the same names and
// documents them; this one adds Scheme.
type Config struct {
	// Scheme names the backend: "s3" or "minio". It is the URL scheme of
	// Bucket.Name and the first word of every error message.
	Scheme string
	Bucket string
	Prefix string

	AccessKey    string
	SecretKey    string
	SessionToken string

	PartSize    int
	Concurrency int
}

// Validate checks c. checkEndpoint is the backend's own check of its
// endpoint setting; it runs after the bucket and prefix checks and before
// the credential and transfer checks. Errors start with "<scheme> config: ".
func (c Config) Validate(checkEndpoint func() error) error {
	if err := c.validate(checkEndpoint); err != nil {
		return fmt.Errorf("%s config: %w", c.Scheme, err)
	}
	return nil
}

func (c Config) validate(checkEndpoint func() error) error {
	if c.Bucket == "" {
		return errors.New("bucket is required")
	}
	if strings.ContainsAny(c.Bucket, "/ ") {
		return fmt.Errorf("invalid bucket name %q", c.Bucket)
	}
	if _, err := CleanPrefix(c.Prefix); err != nil {
		return err
	}
	if err := checkEndpoint(); err != nil {
		return err
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("set both access key and secret key, or neither")
	}
	if c.SessionToken != "" && c.AccessKey == "" {
		return errors.New("session token without access key")
	}
	if c.PartSize < MinPartSize || c.PartSize > MaxPartSize {
		return fmt.Errorf("part size %d outside [5 MiB, 5 GiB]", c.PartSize)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("concurrency %d must be at least 1", c.Concurrency)
	}
	return nil
}
