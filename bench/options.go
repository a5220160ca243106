package bench

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KeyDist is how records are keyed, and so how they spread over
// partitions.
type KeyDist struct {
	// Kind is KeysNone (no key: the agent puts each request's records in
	// one partition, round-robin per request), KeysRandom (a fresh random
	// 16-byte key per record) or KeysUniform (one of N keys, uniformly).
	Kind string
	N    int // KeysUniform only
}

// Key distributions.
const (
	KeysNone    = "none"
	KeysRandom  = "random"
	KeysUniform = "uniform"
)

// ParseKeyDist reads "none", "random" or "uniform:N".
func ParseKeyDist(s string) (KeyDist, error) {
	kind, n, hasN := strings.Cut(strings.TrimSpace(s), ":")
	switch kind {
	case KeysNone, KeysRandom:
		if hasN {
			return KeyDist{}, fmt.Errorf("keys %q: %s takes no count", s, kind)
		}
		return KeyDist{Kind: kind}, nil
	case KeysUniform:
		c, err := strconv.Atoi(n)
		if !hasN || err != nil || c < 1 {
			return KeyDist{}, fmt.Errorf("keys %q: want uniform:N with N >= 1", s)
		}
		return KeyDist{Kind: kind, N: c}, nil
	}
	return KeyDist{}, fmt.Errorf("keys %q: want none, random or uniform:N", s)
}

func (k KeyDist) String() string {
	if k.Kind == KeysUniform {
		return fmt.Sprintf("%s:%d", k.Kind, k.N)
	}
	if k.Kind == "" {
		return KeysNone
	}
	return k.Kind
}

// Value kinds.
const (
	ValuesRandom = "random" // incompressible bytes
	ValuesText   = "text"   // log-like text that zstd compresses about 3:1
)

// Fetch encodings of the HTTP consumers.
const (
	FetchBatches = "batches" // stored batches, decoded by the consumer (application/vnd.silt.batches.v1)
	FetchRecords = "records" // records encoded by the agent (application/vnd.silt.records.v1)
)

// Orders of the catch-up read.
const (
	CatchUpConcurrent = "concurrent" // each consumer reads all its partitions at once
	CatchUpSequential = "sequential" // each consumer reads its partitions one after another
)

// Protocols Silt is driven with.
const (
	ProtocolHTTP  = "http"  // binary produce and fetch requests
	ProtocolKafka = "kafka" // franz-go's kgo client against the Kafka listener
)

// Kafka client codecs (kgo's names); KafkaCompression's default is none,
// as the HTTP producers send records uncompressed.
var kafkaCodecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// Options describe one workload. The same options drive Silt and the NATS
// baseline.
type Options struct {
	// Protocol drives Silt over HTTP (ProtocolHTTP, the default) or Kafka.
	Protocol string
	// KafkaCompression is the codec of the Kafka producers' batches.
	KafkaCompression string
	Producers        int // producer clients
	Consumers        int // consumer clients; 0 skips the tail and catch-up reads
	Topics           int
	Partitions       int     // per topic
	RecordSize       int     // value bytes per record, send time included
	Rate             float64 // records/s over all producers; 0 = as fast as possible
	Duration         time.Duration
	Warmup           time.Duration
	Batch            int // records per produce request
	// Inflight is how many requests each producer keeps outstanding.
	Inflight int
	Keys     KeyDist
	Values   string
	// Idempotent producers (one request outstanding per producer).
	Idempotent bool
	// CatchUp reads everything back from offset 0 after producing.
	CatchUp bool
	// CatchUpTimeout bounds the catch-up read.
	CatchUpTimeout time.Duration
	// FetchEncoding is the body the HTTP consumers fetch: FetchBatches
	// (the default when empty) or FetchRecords.
	FetchEncoding string `json:",omitempty"`
	// CatchUpOrder is how each HTTP consumer reads its partitions back:
	// CatchUpConcurrent (the default when empty) or CatchUpSequential.
	CatchUpOrder string `json:",omitempty"`
}

// DefaultOptions is the main workload: 4 producers and consumers, one
// topic of 16 partitions, 1 KiB records, as fast as possible for a minute.
func DefaultOptions() Options {
	return Options{
		Producers:      4,
		Consumers:      4,
		Topics:         1,
		Partitions:     16,
		RecordSize:     1024,
		Duration:       60 * time.Second,
		Warmup:         10 * time.Second,
		Batch:          1000,
		Inflight:       4,
		Keys:           KeyDist{Kind: KeysNone},
		Values:         ValuesRandom,
		Protocol:       ProtocolHTTP,
		CatchUp:        true,
		CatchUpTimeout: 5 * time.Minute,
		FetchEncoding:  FetchBatches,
		CatchUpOrder:   CatchUpConcurrent,
	}
}

// minRecordSize leaves room for the send time embedded in every value.
const minRecordSize = 16

// Validate checks the options.
func (o Options) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(o.Producers >= 1, "producers must be at least 1")
	check(o.Consumers >= 0, "consumers must not be negative")
	check(o.Topics >= 1, "topics must be at least 1")
	check(o.Partitions >= 1, "partitions must be at least 1")
	check(o.RecordSize >= minRecordSize, "record size must be at least %d bytes (the send time is embedded)", minRecordSize)
	check(o.Rate >= 0, "rate must not be negative")
	check(o.Duration > 0, "duration must be positive")
	check(o.Warmup >= 0, "warmup must not be negative")
	check(o.Batch >= 1, "batch must be at least 1 record")
	check(o.Inflight >= 1, "in-flight requests must be at least 1")
	check(o.Values == ValuesRandom || o.Values == ValuesText, "values must be %s or %s", ValuesRandom, ValuesText)
	check(o.CatchUpTimeout > 0 || !o.CatchUp, "catch-up timeout must be positive")
	check(o.Protocol == "" || o.Protocol == ProtocolHTTP || o.Protocol == ProtocolKafka, "protocol must be %s or %s", ProtocolHTTP, ProtocolKafka)
	check(o.CatchUpOrder == "" || o.CatchUpOrder == CatchUpConcurrent || o.CatchUpOrder == CatchUpSequential, "catch-up order must be %s or %s", CatchUpConcurrent, CatchUpSequential)
	check(o.FetchEncoding == "" || o.FetchEncoding == FetchBatches || o.FetchEncoding == FetchRecords, "fetch encoding must be %s or %s", FetchBatches, FetchRecords)
	check(o.KafkaCompression == "" || slices.Contains(kafkaCodecs, o.KafkaCompression), "Kafka compression must be one of %v", kafkaCodecs)
	switch o.Keys.Kind {
	case KeysNone, KeysRandom:
	case KeysUniform:
		check(o.Keys.N >= 1, "uniform keys need N >= 1")
	default:
		errs = append(errs, fmt.Errorf("keys %q: want none, random or uniform:N", o.Keys.Kind))
	}
	return errors.Join(errs...)
}

// Describe is a one-line summary of the workload.
func (o Options) Describe() string {
	rate := "max"
	if o.Rate > 0 {
		rate = fmt.Sprintf("%.0f rec/s", o.Rate)
	}
	idem := ""
	if o.Idempotent {
		idem = ", idempotent"
	}
	proto := ""
	if o.Protocol == ProtocolKafka {
		proto = fmt.Sprintf(", over Kafka (franz-go, %s batches)", o.kafkaCodec())
	} else if o.FetchEncoding == FetchRecords {
		proto = ", fetching records (records.v1)"
	}
	if o.Protocol != ProtocolKafka && o.CatchUpOrder == CatchUpSequential {
		proto += ", catch-up one partition at a time"
	}
	return fmt.Sprintf("%d producers, %d consumers, %d topic(s) x %d partitions, %d B records (%s), rate %s, %s (+%s warmup), batch %d, in-flight %d, keys %s%s%s",
		o.Producers, o.Consumers, o.Topics, o.Partitions, o.RecordSize, o.Values, rate,
		o.Duration, o.Warmup, o.Batch, o.effectiveInflight(), o.Keys, idem, proto)
}

func (o Options) kafkaCodec() string {
	if o.KafkaCompression == "" {
		return "none"
	}
	return o.KafkaCompression
}

// effectiveInflight is Inflight, except that an idempotent producer sends
// one request at a time.
func (o Options) effectiveInflight() int {
	if o.Idempotent {
		return 1
	}
	return o.Inflight
}
