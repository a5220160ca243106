package bench

import (
	"encoding/json"
	"time"
)

// ProduceFigures are the producers' view of a run's measured window.
type ProduceFigures struct {
	Records       int64   `json:"records"`
	Bytes         int64   `json:"bytes"` // record value and key bytes
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"` // 10^6 bytes
	Requests      int64   `json:"requests"`
	Errors        int64   `json:"errors"`
	Retries       int64   `json:"retries"`
	FirstError    string  `json:"first_error,omitempty"`
	// Latency is from the scheduled send time of a request (its records)
	// to its acknowledgement.
	Latency Summary `json:"latency"`
}

// EndToEndFigures are the tailing consumers' view: from a record's send
// time, embedded in its value, to the moment a consumer holds it.
type EndToEndFigures struct {
	Records int64   `json:"records"`
	Latency Summary `json:"latency"`
}

// CatchUpFigures describe reading everything back from offset 0 after the
// produce phase.
type CatchUpFigures struct {
	Records       int64   `json:"records"`
	Bytes         int64   `json:"bytes"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"`
	Complete      bool    `json:"complete"` // every produced record was read
	// Cold: the agent was restarted before reading (empty caches).
	Cold bool `json:"cold"`
	// Object store figures of the read (Silt only).
	Gets            int64   `json:"gets,omitempty"`
	GetsPerGiB      float64 `json:"gets_per_gib,omitempty"`
	ObjectBytesRead float64 `json:"object_bytes_read,omitempty"`
	// ReadAmplification is object bytes read per record byte returned.
	ReadAmplification float64 `json:"read_amplification,omitempty"`
	// Retries counts fetches answered 429 or 503 and sent again.
	Retries int64 `json:"retries,omitempty"`
}

// AgentFigures come from the agent's Prometheus registry over the measured
// produce window.
type AgentFigures struct {
	Puts            int64   `json:"puts"`
	PutsPerSec      float64 `json:"puts_per_sec"`
	PutsPerGiB      float64 `json:"puts_per_gib"` // per GiB of record bytes produced
	Flushes         int64   `json:"flushes"`
	FlushErrors     int64   `json:"flush_errors"`
	Commits         int64   `json:"commit_transactions"`
	CommitsPerSec   float64 `json:"commit_transactions_per_sec"`
	CommitsPerFlush float64 `json:"commit_transactions_per_flush"`
	MeanSegment     float64 `json:"mean_segment_bytes"`
	MeanPutMs       float64 `json:"mean_put_ms"`
	MeanCommitMs    float64 `json:"mean_commit_ms"`
	// ObjectPerRecordByte is object bytes written per record byte: below 1
	// when zstd found something to squeeze.
	ObjectPerRecordByte float64 `json:"object_bytes_per_record_byte"`
	// TailGets are object GETs (whole or range) made for tailing readers.
	TailGets       int64   `json:"tail_gets"`
	TailGetsPerGiB float64 `json:"tail_gets_per_gib"`
	Backpressure   int64   `json:"backpressure"`
	// CPUSecondsPerGB is the agent process's CPU time per 10^9 record
	// bytes produced; an agent run by silt bench shares its process with
	// the load generator, whose share is the same for runs of one client.
	CPUSecondsPerGB float64 `json:"cpu_seconds_per_gb,omitempty"`
}

// RunResult is one run of one system.
type RunResult struct {
	System       string           `json:"system"` // silt or nats
	Label        string           `json:"label,omitempty"`
	Security     string           `json:"security,omitempty"` // none, auth or auth+tls (Silt)
	Options      Options          `json:"options"`
	LingerMs     float64          `json:"linger_ms,omitempty"`
	SegmentBytes int64            `json:"segment_bytes,omitempty"`
	Produce      ProduceFigures   `json:"produce"`
	EndToEnd     *EndToEndFigures `json:"end_to_end,omitempty"`
	CatchUp      *CatchUpFigures  `json:"catch_up,omitempty"`
	Agent        *AgentFigures    `json:"agent,omitempty"`
	// Memory is the agent's peak memory over the run.
	Memory *MemoryFigures `json:"memory,omitempty"`
	// ProduceCDF is the produce latency distribution, for plots.
	ProduceCDF []CDFPoint `json:"produce_cdf,omitempty"`
}

// MarshalJSON writes durations as Go duration strings.
func (o Options) MarshalJSON() ([]byte, error) {
	type alias Options
	return json.Marshal(struct {
		alias
		Duration       string `json:"Duration"`
		Warmup         string `json:"Warmup"`
		CatchUpTimeout string `json:"CatchUpTimeout"`
		Keys           string `json:"Keys"`
	}{alias(o), o.Duration.String(), o.Warmup.String(), o.CatchUpTimeout.String(), o.Keys.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (o *Options) UnmarshalJSON(b []byte) error {
	type alias Options
	var v struct {
		alias
		Duration       string `json:"Duration"`
		Warmup         string `json:"Warmup"`
		CatchUpTimeout string `json:"CatchUpTimeout"`
		Keys           string `json:"Keys"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*o = Options(v.alias)
	var err error
	for _, d := range []struct {
		s string
		p *time.Duration
	}{{v.Duration, &o.Duration}, {v.Warmup, &o.Warmup}, {v.CatchUpTimeout, &o.CatchUpTimeout}} {
		if d.s == "" {
			continue
		}
		if *d.p, err = time.ParseDuration(d.s); err != nil {
			return err
		}
	}
	if v.Keys != "" {
		if o.Keys, err = ParseKeyDist(v.Keys); err != nil {
			return err
		}
	}
	return nil
}

const (
	mb  = 1e6
	gib = 1 << 30
)

func perSec(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
