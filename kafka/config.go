package kafka

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Config tunes the listener.
type Config struct {
	// Listen is the listener's host:port.
	Listen string
	// AdvertisedAddr is the host:port Metadata gives clients: the load
	// balancer's in a cluster, this listener's otherwise.
	AdvertisedAddr string
	// AutoCreateTopics creates a topic that Metadata asks for and does
	// not find, when the client allows it, with DefaultPartitions.
	AutoCreateTopics bool
	// DefaultPartitions is the partition count of auto-created topics and
	// of CreateTopics asking for the default (-1).
	DefaultPartitions int32
	// MaxPartitions bounds a topic's partition count.
	MaxPartitions int32
	// ClusterID is reported by Metadata and DescribeCluster.
	ClusterID string

	// MaxConnections bounds open connections; past it new ones are closed.
	MaxConnections int
	// MaxRequestBytes bounds one request; a larger one closes the
	// connection, as Kafka's socket.request.max.bytes does.
	MaxRequestBytes int64
	// MaxInflightBytes bounds the requests being handled plus the fetch
	// responses being built and written; past it reading stops.
	MaxInflightBytes int64
	// MaxInflightPerConn bounds the requests one connection has pipelined.
	MaxInflightPerConn int
	// IdleTimeout closes connections without requests for this long.
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one response.
	WriteTimeout time.Duration

	// MaxRecordBytes bounds one record (key + value + headers), as on HTTP.
	MaxRecordBytes int
	// RawBatchMinBytes: a produced batch that the client compressed and
	// that is at least this large is stored as the client sent it;
	// smaller and uncompressed ones are re-encoded (zstd) into the
	// flush's chunk of their partition (see docs/segment-format.md).
	RawBatchMinBytes int
	// MaxWait caps a fetch's max_wait_ms.
	MaxWait time.Duration
	// MaxFetchBytes caps one fetch response.
	MaxFetchBytes int64
	// TopicCacheTTL is how long a topic description is trusted.
	TopicCacheTTL time.Duration

	// RequireAuth: connections authenticate (SASL, or a TLS client
	// certificate naming a key) before any request but ApiVersions and
	// SASL's, and every request is checked against the key's ACLs.
	// Without it every request is anonymous and may do everything.
	RequireAuth bool
	// AuthTimeout bounds the time a connection has to authenticate.
	AuthTimeout time.Duration
}

// DefaultConfig returns the defaults. Listen and AdvertisedAddr must be
// set.
func DefaultConfig() Config {
	return Config{
		DefaultPartitions:  1,
		MaxPartitions:      100_000,
		ClusterID:          "silt",
		MaxConnections:     4096,
		MaxRequestBytes:    64 << 20,
		MaxInflightBytes:   256 << 20,
		MaxInflightPerConn: 32,
		IdleTimeout:        10 * time.Minute,
		WriteTimeout:       30 * time.Second,
		MaxRecordBytes:     1 << 20,
		RawBatchMinBytes:   16 << 10,
		MaxWait:            30 * time.Second,
		MaxFetchBytes:      64 << 20,
		TopicCacheTTL:      2 * time.Second,
		AuthTimeout:        30 * time.Second,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.Listen == "" {
		return errors.New("kafka: listen address is required")
	}
	if _, _, err := splitHostPort(c.AdvertisedAddr); err != nil {
		return fmt.Errorf("kafka: advertised address: %w", err)
	}
	switch {
	case c.DefaultPartitions < 1 || c.DefaultPartitions > c.MaxPartitions:
		return fmt.Errorf("kafka: default partitions must be between 1 and %d", c.MaxPartitions)
	case c.MaxConnections < 1:
		return errors.New("kafka: max connections must be positive")
	case c.MaxRequestBytes < 1024:
		return errors.New("kafka: max request bytes must be at least 1 KiB")
	case c.MaxInflightBytes < c.MaxRequestBytes || c.MaxInflightBytes < c.MaxFetchBytes:
		return fmt.Errorf("kafka: max in-flight bytes (%d) must be at least max request bytes (%d) and max fetch bytes (%d)",
			c.MaxInflightBytes, c.MaxRequestBytes, c.MaxFetchBytes)
	case c.MaxInflightPerConn < 1:
		return errors.New("kafka: max in-flight requests per connection must be positive")
	case c.IdleTimeout <= 0 || c.WriteTimeout <= 0:
		return errors.New("kafka: idle and write timeouts must be positive")
	case c.MaxRecordBytes < 1:
		return errors.New("kafka: max record bytes must be positive")
	case c.RawBatchMinBytes < 0:
		return errors.New("kafka: raw batch minimum must not be negative")
	case c.MaxWait <= 0:
		return errors.New("kafka: max wait must be positive")
	case c.MaxFetchBytes < 1024:
		return errors.New("kafka: max fetch bytes must be at least 1 KiB")
	case c.TopicCacheTTL < 0:
		return errors.New("kafka: topic cache TTL must not be negative")
	case c.AuthTimeout <= 0:
		return errors.New("kafka: authentication timeout must be positive")
	}
	return nil
}

// splitHostPort splits an advertised address; the port must be a number.
func splitHostPort(addr string) (string, int32, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || host == "" {
		return "", 0, fmt.Errorf("%q must be host:port", addr)
	}
	return host, int32(p), nil
}
