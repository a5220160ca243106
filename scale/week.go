package scale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"silt/metadata"
	"silt/objectstore"
	"silt/objectstore/mem"
	"silt/ownership"
	"silt/segment"
)

// WeekConfig is a simulated week of produce into one agent that merges.
// Time is simulated: every simulated minute the agent flushes
// FlushesPerMinute segments and then runs a janitor pass (as its merge
// interval of a minute would), with records timestamped in simulated time.
// Partition p gets a share of BytesPerMinute proportional to 2^-p, so a
// few partitions are busy and most are quiet, down to a record every few
// hours.
type WeekConfig struct {
	DatabaseURL string
	Partitions  int
	// Hours is the simulated time; the index is measured every 24 hours
	// and at the end.
	Hours            int
	BytesPerMinute   int64
	FlushesPerMinute int
	RecordBytes      int
	// Janitor is the agent's janitor config; MergeMinAge is set to 0
	// (simulated minutes pass faster than Postgres's clock).
	Janitor ownership.JanitorConfig
}

// DefaultWeekConfig is 16 partitions taking 64 KiB a minute in all
// (about 630 MiB in the week) in records of 256 bytes, four flushes a
// minute, with the agent's default janitor.
func DefaultWeekConfig() WeekConfig {
	return WeekConfig{Partitions: 16, Hours: 7 * 24, BytesPerMinute: 64 << 10, FlushesPerMinute: 4, RecordBytes: 256,
		Janitor: ownership.DefaultConfig().Janitor}
}

// Validate checks the config.
func (c WeekConfig) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("scale: database URL is required")
	case c.Partitions < 1 || c.Hours < 1 || c.BytesPerMinute < 1 || c.FlushesPerMinute < 1 || c.RecordBytes < 1:
		return errors.New("scale: week sizes must be positive")
	}
	return nil
}

// WeekDay is the index at the end of one simulated day (or at the end).
type WeekDay struct {
	Hours int `json:"hours"`
	// Rows is the index rows, Bytes the bytes they cover, RowsPerGiB their
	// ratio; FlushRows the rows still of flush segments (not merged yet).
	Rows       int64   `json:"rows"`
	FlushRows  int64   `json:"flush_rows"`
	Bytes      int64   `json:"bytes"`
	RowsPerGiB float64 `json:"rows_per_gib"`
	// Produced is the bytes produced so far; Rewritten the bytes the
	// merges copied so far.
	Produced  int64 `json:"produced_bytes"`
	Rewritten int64 `json:"rewritten_bytes"`
	// Seconds is the wall time since the start.
	Seconds float64 `json:"seconds"`
}

// WeekResult is the simulated week, day by day.
type WeekResult struct {
	Partitions     int       `json:"partitions"`
	BytesPerMinute int64     `json:"bytes_per_minute"`
	MergeRowBytes  int64     `json:"merge_row_bytes"`
	Days           []WeekDay `json:"days"`
	// Busiest and Quietest are the rows per GiB at the end in the busiest
	// and the quietest partition that holds data.
	Busiest  float64 `json:"busiest_rows_per_gib"`
	Quietest float64 `json:"quietest_rows_per_gib"`
}

// RunWeek runs the simulated week in a fresh database.
func RunWeek(ctx context.Context, cfg WeekConfig, logger *slog.Logger, pr logf) (*WeekResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger, pr = orQuiet(logger, pr)
	store, err := openStore(ctx, cfg.DatabaseURL, "week", 4, logger)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	lc := DefaultConfig()
	lc.Topics, lc.Partitions = 0, 1
	if _, err := setup(ctx, store, lc, pr); err != nil {
		return nil, err
	}
	tcfg := metadata.DefaultTopicConfig()
	tcfg.RetentionMs = -1 // kept: the week is about merging, not retention
	topic, err := store.CreateTopic(ctx, "week", int32(cfg.Partitions), tcfg)
	if err != nil {
		return nil, err
	}
	bucket, err := mem.New(ctx, mem.DefaultConfig())
	if err != nil {
		return nil, err
	}
	oc := ownership.DefaultConfig()
	oc.AgentID, oc.Version = "week", "scale"
	oc.Janitor = cfg.Janitor
	oc.Janitor.MergeMinAge, oc.Janitor.GCGrace, oc.Janitor.RewriteBytesPerSecond = 0, 0, 1<<40
	reg := prometheus.NewRegistry()
	owner, err := ownership.New(oc, ownership.Deps{Store: store, Bucket: bucket, Logger: logger, Registerer: reg})
	if err != nil {
		return nil, err
	}
	if err := owner.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = owner.Stop(context.WithoutCancel(ctx)) }()
	if n := len(owner.Leases()); n != cfg.Partitions {
		return nil, fmt.Errorf("scale: the week's agent holds %d of %d partitions", n, cfg.Partitions)
	}

	res := &WeekResult{Partitions: cfg.Partitions, BytesPerMinute: cfg.BytesPerMinute, MergeRowBytes: cfg.Janitor.MergeRowBytes}
	w := &weekProducer{cfg: cfg, store: store, bucket: bucket, topic: topic.ID, rng: rand.New(rand.NewPCG(1, 2))}
	w.values = make([]byte, 1<<16)
	for i := range w.values {
		w.values[i] = byte(w.rng.Uint32())
	}
	var total float64
	for p := 0; p < cfg.Partitions; p++ {
		total += math.Exp2(-float64(p))
	}
	w.perFlush = make([]float64, cfg.Partitions)
	for p := range w.perFlush {
		w.perFlush[p] = float64(cfg.BytesPerMinute) * math.Exp2(-float64(p)) / total / float64(cfg.FlushesPerMinute)
	}
	start := time.Now()
	simStart := time.Now().Add(-time.Duration(cfg.Hours) * time.Hour)
	for minute := 0; minute < cfg.Hours*60; minute++ {
		now := simStart.Add(time.Duration(minute) * time.Minute)
		for f := 0; f < cfg.FlushesPerMinute; f++ {
			if err := w.flush(ctx, now.Add(time.Duration(f)*time.Minute/time.Duration(cfg.FlushesPerMinute))); err != nil {
				return res, err
			}
		}
		owner.RunJanitor(ctx)
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if (minute+1)%(24*60) == 0 || minute+1 == cfg.Hours*60 {
			day, err := w.measure(ctx, reg)
			if err != nil {
				return res, err
			}
			day.Hours, day.Seconds = (minute+1)/60, time.Since(start).Seconds()
			res.Days = append(res.Days, day)
			pr("week: hour %d: %d index rows over %d MiB (%.0f rows/GiB), %d not merged yet; %d MiB rewritten by merges",
				day.Hours, day.Rows, day.Bytes>>20, day.RowsPerGiB, day.FlushRows, day.Rewritten>>20)
		}
	}
	if res.Busiest, res.Quietest, err = w.extremes(ctx); err != nil {
		return res, err
	}
	return res, nil
}

type weekProducer struct {
	cfg      WeekConfig
	store    *metadata.Store
	bucket   objectstore.Bucket
	topic    int64
	rng      *rand.Rand
	values   []byte
	perFlush []float64 // bytes per flush, by partition
	produced int64
	seq      int
}

func (w *weekProducer) flush(ctx context.Context, at time.Time) error {
	b := segment.NewBuilder(segment.NewEncoder())
	var chunks []metadata.Chunk
	ts := at.UnixMilli()
	for p, want := range w.perFlush {
		n := int(want / float64(w.cfg.RecordBytes))
		if w.rng.Float64() < want/float64(w.cfg.RecordBytes)-float64(n) {
			n++
		}
		if n == 0 {
			continue
		}
		recs := make([]segment.Record, n)
		for i := range recs {
			off := w.rng.IntN(len(w.values) - w.cfg.RecordBytes)
			recs[i] = segment.Record{OffsetDelta: int32(i), Timestamp: ts, Value: w.values[off : off+w.cfg.RecordBytes]}
		}
		ref, err := b.Add(segment.ChunkKey{TopicID: w.topic, Partition: int32(p)}, recs, segment.BatchOptions{Compression: segment.CompressionNone})
		if err != nil {
			return err
		}
		chunks = append(chunks, metadata.Chunk{TopicID: w.topic, Partition: int32(p), ByteOffset: ref.Offset, ByteLength: int32(ref.Length),
			Records: ref.Records, LastOffsetDelta: ref.LastOffsetDelta, MaxTimestamp: ref.MaxTimestamp})
		w.produced += ref.Length
	}
	if len(chunks) == 0 {
		return nil
	}
	obj, _, err := b.Finish()
	if err != nil {
		return err
	}
	w.seq++
	key := fmt.Sprintf("segments/week/%08d.seg", w.seq)
	id, err := w.store.RegisterSegment(ctx, key, int64(len(obj)), metadata.KindFlush, time.Minute)
	if err != nil {
		return err
	}
	if err := w.bucket.Put(ctx, key, bytes.NewReader(obj), int64(len(obj)), objectstore.PutOptions{IfNotExists: true}); err != nil {
		return err
	}
	res, err := w.store.CommitFlush(ctx, metadata.Flush{SegmentID: id, SegmentSize: int64(len(obj)), Chunks: chunks})
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

func (w *weekProducer) measure(ctx context.Context, reg *prometheus.Registry) (WeekDay, error) {
	var d WeekDay
	err := w.store.Pool().QueryRow(ctx, `
		SELECT count(*), count(*) FILTER (WHERE s.kind = 'flush'), coalesce(sum(b.byte_length), 0)
		FROM batches b JOIN segments s ON s.id = b.segment_id WHERE b.topic_id = $1`, w.topic).Scan(&d.Rows, &d.FlushRows, &d.Bytes)
	if err != nil {
		return d, fmt.Errorf("scale: count rows: %w", err)
	}
	if d.Bytes > 0 {
		d.RowsPerGiB = float64(d.Rows) / (float64(d.Bytes) / (1 << 30))
	}
	d.Produced = w.produced
	mfs, err := reg.Gather()
	if err != nil {
		return d, err
	}
	for _, mf := range mfs {
		if mf.GetName() != "silt_janitor_rewritten_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "duty" && l.GetValue() == "merge" {
					d.Rewritten = int64(m.GetCounter().GetValue())
				}
			}
		}
	}
	return d, nil
}

// extremes returns the rows per GiB of the busiest partition and of the
// quietest one holding data.
func (w *weekProducer) extremes(ctx context.Context) (busiest, quietest float64, err error) {
	rows, err := w.store.Pool().Query(ctx, `
		SELECT count(*)::float8 / (sum(byte_length)::float8 / (1 << 30)) FROM batches
		WHERE topic_id = $1 GROUP BY partition HAVING sum(byte_length) > 0 ORDER BY sum(byte_length) DESC`, w.topic)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	first := true
	for rows.Next() {
		var v float64
		if err := rows.Scan(&v); err != nil {
			return 0, 0, err
		}
		if first {
			busiest, first = v, false
		}
		quietest = v
	}
	return busiest, quietest, rows.Err()
}
