package localstack

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// EnsureDatabase creates database name on the server adminURL points at
// unless it exists, and returns the URL of that database.
func EnsureDatabase(ctx context.Context, adminURL, name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\"\x00") {
		return "", fmt.Errorf("localstack: bad database name %q", name)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("localstack: connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pe *pgconn.PgError
	if err != nil && !(errors.As(err, &pe) && pe.Code == "42P04") { // duplicate_database
		return "", fmt.Errorf("localstack: create database %s: %w", name, err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("localstack: postgres URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// EnsureBucket creates bucket on the MinIO (or other S3) server at
// endpoint (http://host:port) unless it exists.
func EnsureBucket(ctx context.Context, endpoint, accessKey, secretKey, bucket string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return fmt.Errorf("localstack: bad endpoint %q", endpoint)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(accessKey, secretKey, ""),
		Secure: u.Scheme == "https",
		Region: Region,
	})
	if err != nil {
		return fmt.Errorf("localstack: minio client: %w", err)
	}
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		return fmt.Errorf("localstack: bucket %s: %w", bucket, err)
	}
	if ok {
		return nil
	}
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: Region}); err != nil {
		return fmt.Errorf("localstack: make bucket %s: %w", bucket, err)
	}
	return nil
}

// Region is the S3 region name the local topology uses.
const Region = "us-east-1"

// S3URL is the object store URL of bucket (under prefix) on an S3-compatible
// endpoint such as MinIO.
func S3URL(endpoint, bucket, prefix string) string {
	q := url.Values{"endpoint": {endpoint}, "region": {Region}}
	return "s3://" + bucket + "/" + strings.Trim(prefix, "/") + "?" + q.Encode()
}
