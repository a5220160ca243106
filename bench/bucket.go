package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"silt/objectstore"
	"silt/objectstore/bucketurl"
)

// EnsureBucket creates the bucket of an s3:// or minio:// URL with an
// endpoint= (a MinIO, say) when it does not exist yet, with the
// credentials of the environment (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, or MINIO_ACCESS_KEY and MINIO_SECRET_KEY). Other
// URLs are left alone.
func EnsureBucket(ctx context.Context, rawURL string) error {
	b, err := bucketurl.Open(ctx, rawURL)
	if err != nil {
		return err
	}
	_, err = b.Stat(ctx, "silt-bench-probe")
	if err == nil || errors.Is(err, objectstore.ErrNotExist) {
		return nil
	}
	if !errors.Is(err, objectstore.ErrBucketNotExist) {
		return err
	}
	u, perr := url.Parse(rawURL)
	if perr != nil || (u.Scheme != "s3" && u.Scheme != "minio") || u.Query().Get("endpoint") == "" {
		return err
	}
	ep, perr := url.Parse(u.Query().Get("endpoint"))
	if perr != nil {
		return err
	}
	key, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if key == "" {
		key, secret = os.Getenv("MINIO_ACCESS_KEY"), os.Getenv("MINIO_SECRET_KEY")
	}
	region := u.Query().Get("region")
	if region == "" {
		region = "us-east-1"
	}
	mc, cerr := minio.New(ep.Host, &minio.Options{
		Creds: credentials.NewStaticV4(key, secret, ""), Secure: ep.Scheme == "https", Region: region,
	})
	if cerr != nil {
		return fmt.Errorf("create bucket %s: %w", u.Host, cerr)
	}
	if cerr := mc.MakeBucket(ctx, u.Host, minio.MakeBucketOptions{Region: region}); cerr != nil {
		return fmt.Errorf("create bucket %s: %w", u.Host, cerr)
	}
	return nil
}
