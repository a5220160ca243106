package bucketurl

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"

	"silt/objectstore"
	"silt/objectstore/file"
	"silt/objectstore/mem"
	"silt/objectstore/minio"
	"silt/objectstore/s3"
)

// ErrBadURL is wrapped by every error about the URL itself.
var ErrBadURL = errors.New("bucketurl: bad URL")

// Open opens the bucket rawURL names.
func Open(ctx context.Context, rawURL string) (objectstore.Bucket, error) {
	sp, err := parse(rawURL, os.Getenv)
	if err != nil {
		return nil, err
	}
	switch {
	case sp.s3 != nil:
		return s3.New(ctx, *sp.s3)
	case sp.minio != nil:
		return minio.New(ctx, *sp.minio)
	case sp.file != nil:
		return file.New(ctx, *sp.file)
	default:
		return mem.New(ctx, *sp.mem)
	}
}

// spec is a parsed URL: exactly one config is set.
type spec struct {
	s3    *s3.Config
	minio *minio.Config
	file  *file.Config
	mem   *mem.Config
}

func bad(rawURL, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrBadURL, redact(rawURL), fmt.Sprintf(format, args...))
}

// redact hides a password in a URL that (wrongly) carries one.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	return u.Redacted()
}

// parse reads rawURL into a backend config; getenv supplies credentials.
func parse(rawURL string, getenv func(string) string) (spec, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return spec{}, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	if u.User != nil {
		return spec{}, bad(rawURL, "credentials do not belong in the URL; use the environment")
	}
	if u.Fragment != "" {
		return spec{}, bad(rawURL, "unexpected fragment")
	}
	if u.Opaque != "" {
		return spec{}, bad(rawURL, "want scheme://...")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return spec{}, bad(rawURL, "query: %v", err)
	}
	switch u.Scheme {
	case "s3":
		return parseS3(rawURL, u, q)
	case "minio":
		return parseMinio(rawURL, u, q, getenv)
	case "file":
		return parseFile(rawURL, u, q)
	case "mem":
		return parseMem(rawURL, u, q)
	case "":
		return spec{}, bad(rawURL, "no scheme; want s3://, minio://, file:// or mem://")
	default:
		return spec{}, bad(rawURL, "unknown scheme %q; want s3, minio, file or mem", u.Scheme)
	}
}

// params returns the single values of the allowed query parameters and
// rejects any other parameter or a repeated one.
func params(rawURL string, q url.Values, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for k, vs := range q {
		found := false
		for _, a := range allowed {
			found = found || a == k
		}
		if !found {
			if len(allowed) == 0 {
				return nil, bad(rawURL, "takes no query parameters, got %q", k)
			}
			return nil, bad(rawURL, "unknown query parameter %q (allowed: %s)", k, strings.Join(allowed, ", "))
		}
		if len(vs) != 1 {
			return nil, bad(rawURL, "query parameter %q given %d times", k, len(vs))
		}
		out[k] = vs[0]
	}
	return out, nil
}

// bucketAndPrefix reads s3-style bucket (host) and prefix (path).
func bucketAndPrefix(rawURL string, u *url.URL) (string, string, error) {
	if u.Host == "" {
		return "", "", bad(rawURL, "no bucket; want %s://bucket[/prefix]", u.Scheme)
	}
	if u.Port() != "" {
		return "", "", bad(rawURL, "the bucket is not a host: put the server in ?endpoint=")
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := objectstore.ValidateKey(prefix); err != nil {
			return "", "", bad(rawURL, "prefix: %v", err)
		}
	}
	return u.Host, prefix, nil
}

// httpEndpoint checks an endpoint= value.
func httpEndpoint(rawURL, endpoint string) (*url.URL, error) {
	e, err := url.Parse(endpoint)
	if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
		return nil, bad(rawURL, "endpoint %q must be http://host[:port] or https://host[:port]", endpoint)
	}
	if strings.Trim(e.Path, "/") != "" || e.RawQuery != "" || e.User != nil {
		return nil, bad(rawURL, "endpoint %q must have no path, query or credentials", endpoint)
	}
	return e, nil
}

func parseS3(rawURL string, u *url.URL, q url.Values) (spec, error) {
	p, err := params(rawURL, q, "endpoint", "region", "unsigned_payload")
	if err != nil {
		return spec{}, err
	}
	bucket, prefix, err := bucketAndPrefix(rawURL, u)
	if err != nil {
		return spec{}, err
	}
	cfg := s3.DefaultConfig()
	cfg.Bucket, cfg.Prefix, cfg.Region = bucket, prefix, p["region"]
	if ep, ok := p["endpoint"]; ok {
		e, err := httpEndpoint(rawURL, ep)
		if err != nil {
			return spec{}, err
		}
		cfg.Endpoint = e.Scheme + "://" + e.Host
		cfg.PathStyle = true
	}
	// Bodies are signed only where TLS does not protect them, unless
	// unsigned_payload says otherwise.
	cfg.UnsignedPayload = !strings.HasPrefix(cfg.Endpoint, "http://")
	if v, ok := p["unsigned_payload"]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return spec{}, bad(rawURL, "unsigned_payload=%q: want true or false", v)
		}
		cfg.UnsignedPayload = b
	}
	if err := cfg.Validate(); err != nil {
		return spec{}, fmt.Errorf("%w %q: %w", ErrBadURL, rawURL, err)
	}
	return spec{s3: &cfg}, nil
}

func parseMinio(rawURL string, u *url.URL, q url.Values, getenv func(string) string) (spec, error) {
	p, err := params(rawURL, q, "endpoint", "region")
	if err != nil {
		return spec{}, err
	}
	bucket, prefix, err := bucketAndPrefix(rawURL, u)
	if err != nil {
		return spec{}, err
	}
	ep, ok := p["endpoint"]
	if !ok {
		return spec{}, bad(rawURL, "minio needs ?endpoint=http://host:port")
	}
	e, err := httpEndpoint(rawURL, ep)
	if err != nil {
		return spec{}, err
	}
	cfg := minio.DefaultConfig()
	cfg.Bucket, cfg.Prefix = bucket, prefix
	cfg.Endpoint, cfg.Secure = e.Host, e.Scheme == "https"
	if r := p["region"]; r != "" {
		cfg.Region = r
	}
	switch {
	case getenv("AWS_ACCESS_KEY_ID") != "" && getenv("AWS_SECRET_ACCESS_KEY") != "":
		cfg.AccessKey, cfg.SecretKey = getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
		cfg.SessionToken = getenv("AWS_SESSION_TOKEN")
	case getenv("MINIO_ACCESS_KEY") != "" && getenv("MINIO_SECRET_KEY") != "":
		cfg.AccessKey, cfg.SecretKey = getenv("MINIO_ACCESS_KEY"), getenv("MINIO_SECRET_KEY")
	default:
		return spec{}, fmt.Errorf("bucketurl %q: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or MINIO_ACCESS_KEY and MINIO_SECRET_KEY", rawURL)
	}
	if err := cfg.Validate(); err != nil {
		return spec{}, fmt.Errorf("%w %q: %w", ErrBadURL, rawURL, err)
	}
	return spec{minio: &cfg}, nil
}

func parseFile(rawURL string, u *url.URL, q url.Values) (spec, error) {
	if _, err := params(rawURL, q); err != nil {
		return spec{}, err
	}
	if u.Host != "" && u.Host != "localhost" {
		return spec{}, bad(rawURL, "host %q: want file:///absolute/path", u.Host)
	}
	if u.Path == "" || !path.IsAbs(u.Path) {
		return spec{}, bad(rawURL, "want file:///absolute/path")
	}
	cfg := file.DefaultConfig()
	cfg.Root = path.Clean(u.Path)
	cfg.Create = true
	if err := cfg.Validate(); err != nil {
		return spec{}, fmt.Errorf("%w %q: %w", ErrBadURL, rawURL, err)
	}
	return spec{file: &cfg}, nil
}

func parseMem(rawURL string, u *url.URL, q url.Values) (spec, error) {
	if _, err := params(rawURL, q); err != nil {
		return spec{}, err
	}
	if strings.Trim(u.Path, "/") != "" {
		return spec{}, bad(rawURL, "want mem:// or mem://name, without a path")
	}
	cfg := mem.DefaultConfig()
	cfg.Name = u.Host
	if err := cfg.Validate(); err != nil {
		return spec{}, fmt.Errorf("%w %q: %w", ErrBadURL, rawURL, err)
	}
	return spec{mem: &cfg}, nil
}
