package scale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/bench"
	"silt/metadata"
)

// IndexConfig is an index-size experiment: synthetic index rows spread
// over Partitions partitions, added by COPY up to each of Steps (rows,
// ascending), with Lookups lookups of each kind after each step.
type IndexConfig struct {
	DatabaseURL string
	Partitions  int
	Steps       []int64
	// RowsPerSegment is how many index rows share one segment row, as the
	// chunks of one merged segment do.
	RowsPerSegment int
	// RecordsPerRow is the offsets each row covers.
	RecordsPerRow int64
	// Lookups of each kind per step, run by Concurrency clients.
	Lookups     int
	Concurrency int
}

// DefaultIndexConfig spreads the rows over 10,000 partitions.
func DefaultIndexConfig() IndexConfig {
	return IndexConfig{Partitions: 10_000, RowsPerSegment: 100, RecordsPerRow: 1000, Lookups: 20_000, Concurrency: 2,
		Steps: []int64{0, 1_000_000, 10_000_000}}
}

// Validate checks the config.
func (c IndexConfig) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("scale: database URL is required")
	case c.Partitions < 1 || c.RowsPerSegment < 1 || c.RecordsPerRow < 1:
		return errors.New("scale: partitions, rows per segment and records per row must be positive")
	case c.Lookups < 1 || c.Concurrency < 1:
		return errors.New("scale: lookups and concurrency must be positive")
	case len(c.Steps) == 0:
		return errors.New("scale: at least one step")
	}
	for i, s := range c.Steps {
		if s < 0 || i > 0 && s < c.Steps[i-1] {
			return errors.New("scale: steps must be ascending row counts")
		}
	}
	return nil
}

// IndexStep is the figures at one index size.
type IndexStep struct {
	Rows int64 `json:"rows"`
	// LoadSeconds is how long adding the rows since the last step took
	// (COPY, then VACUUM ANALYZE).
	LoadSeconds float64 `json:"load_seconds"`
	// Bytes on disk: the batches table with its indexes, its primary key,
	// and the segments table with its indexes.
	BatchesBytes  int64 `json:"batches_bytes"`
	PKeyBytes     int64 `json:"batches_pkey_bytes"`
	SegmentsBytes int64 `json:"segments_bytes"`
	// PKeyLevels is the primary key's B-tree height (root level + 1).
	PKeyLevels int `json:"batches_pkey_levels"`
	// Lookups at the tail of a random partition, at a random offset of
	// one, and by timestamp (ListOffsets) near the tail.
	Tail      OpResult `json:"lookup_tail"`
	Random    OpResult `json:"lookup_random"`
	Timestamp OpResult `json:"lookup_timestamp"`
	// Server is each kind's time inside Postgres (pg_stat_statements:
	// mean and max execution time of its statements, per lookup), when
	// the server loads it; the latencies above add the round trips and
	// the waits for a CPU of a loaded machine.
	Server map[string]ServerTime `json:"server,omitempty"`
	// HitRatio is the share of block reads found in shared buffers during
	// the lookups; BlocksPerLookup the reads that missed, per lookup.
	HitRatio        float64 `json:"hit_ratio"`
	BlocksPerLookup float64 `json:"blocks_read_per_lookup"`
}

// ServerTime is a lookup's time inside Postgres.
type ServerTime struct {
	MeanMs float64 `json:"mean_ms"`
	MaxMs  float64 `json:"max_ms"`
	// Statements per lookup (a lookup that pages runs several).
	Statements float64 `json:"statements_per_lookup"`
}

// IndexResult is an index-size experiment.
type IndexResult struct {
	Partitions    int         `json:"partitions"`
	RecordsPerRow int64       `json:"records_per_row"`
	Concurrency   int         `json:"concurrency"`
	Steps         []IndexStep `json:"steps"`
}

// RunIndex runs an index-size experiment in a fresh database.
func RunIndex(ctx context.Context, cfg IndexConfig, logger *slog.Logger, pr logf) (*IndexResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pr == nil {
		pr = quiet
	}
	store, err := openStore(ctx, cfg.DatabaseURL, "index", int(max(cfg.Concurrency, 2))+1, logger)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	lc := DefaultConfig()
	lc.Topics, lc.Partitions = 1, cfg.Partitions
	cl, err := setup(ctx, store, lc, pr)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("scale: connect: %w", err)
	}
	defer conn.Close(ctx)
	ld := &loader{conn: conn, cfg: cfg, topic: cl.topicIDs[0], base: time.Now().Add(-365 * 24 * time.Hour).UnixMilli()}
	res := &IndexResult{Partitions: cfg.Partitions, RecordsPerRow: cfg.RecordsPerRow, Concurrency: cfg.Concurrency}
	var loaded int64
	for _, target := range cfg.Steps {
		step := IndexStep{Rows: target}
		if target > loaded {
			start := time.Now()
			pr("index: adding %d rows (to %d)", target-loaded, target)
			if err := ld.load(ctx, loaded, target, pr); err != nil {
				return res, err
			}
			step.LoadSeconds = time.Since(start).Seconds()
			loaded = target
		}
		if err := ld.sizes(ctx, &step); err != nil {
			return res, err
		}
		pr("index: %d rows, batches %d MiB (primary key %d MiB, %d levels); looking up", target, step.BatchesBytes>>20, step.PKeyBytes>>20, step.PKeyLevels)
		if err := lookups(ctx, store, conn, cfg, cl.topicIDs[0], loaded, ld.base, &step); err != nil {
			return res, err
		}
		pr("index: %d rows: lookup p99 tail %.2f ms, random %.2f ms, by timestamp %.2f ms; hit ratio %.4f",
			target, step.Tail.P99, step.Random.P99, step.Timestamp.P99, step.HitRatio)
		res.Steps = append(res.Steps, step)
	}
	return res, nil
}

// loader adds synthetic rows: row r belongs to partition r mod P as that
// partition's (r div P)-th row, so rows arrive interleaved across
// partitions, as flushes write them, and each partition's offsets grow.
type loader struct {
	conn  *pgx.Conn
	cfg   IndexConfig
	topic int64
	base  int64 // timestamp of the first row, ms
}

// rowTime is row k's max timestamp: the rows span a year, a minute apart
// per row of a partition at most.
func (l *loader) rowTime(k int64) int64 { return l.base + k*60_000 }

func (l *loader) load(ctx context.Context, from, to int64, pr logf) error {
	per := int64(l.cfg.RowsPerSegment)
	// Segments: one per RowsPerSegment rows, ids from the sequence.
	firstSeg := from / per
	lastSeg := (to + per - 1) / per
	if _, err := l.conn.Exec(ctx, `
		INSERT INTO segments (key, size, kind, state)
		SELECT 'segments/scale/index/' || g, 32 << 20, 'merged', 'live' FROM generate_series($1::bigint, $2::bigint - 1) AS g
		ON CONFLICT (key) DO NOTHING`, firstSeg, lastSeg); err != nil {
		return fmt.Errorf("scale: segments: %w", err)
	}
	ids := map[int64]int64{}
	rows, err := l.conn.Query(ctx, `
		SELECT n, id FROM (SELECT substr(key, length('segments/scale/index/') + 1)::bigint AS n, id FROM segments
		                   WHERE key LIKE 'segments/scale/index/%') s
		WHERE n BETWEEN $1 AND $2`, firstSeg, lastSeg)
	if err != nil {
		return fmt.Errorf("scale: segments: %w", err)
	}
	for rows.Next() {
		var n, id int64
		if err := rows.Scan(&n, &id); err != nil {
			rows.Close()
			return err
		}
		ids[n] = id
	}
	rows.Close()
	// The index rows carry no foreign keys (migration 0005): COPY writes
	// them as fast as it can.
	P := int64(l.cfg.Partitions)
	src := &rowSource{l: l, from: from, next: from, end: to, P: P, seg: ids, per: per, pr: pr, started: time.Now()}
	_, err = l.conn.CopyFrom(ctx, pgx.Identifier{"batches"},
		[]string{"topic_id", "partition", "base_offset", "last_offset", "record_count", "max_timestamp", "segment_id", "byte_offset", "byte_length", "batch_count",
			"running_max_ts"}, src)
	if err != nil {
		return fmt.Errorf("scale: copy rows: %w", err)
	}
	// The partitions' high watermarks and greatest timestamps follow
	// their last rows.
	if _, err := l.conn.Exec(ctx, `
		UPDATE partitions p SET next_offset = ((($2::bigint - 1 - p.partition) / $3::bigint) + 1) * $4::bigint,
		       total_bytes = ((($2::bigint - 1 - p.partition) / $3::bigint) + 1) * (1 << 20),
		       max_timestamp = $5::bigint + (($2::bigint - 1 - p.partition) / $3::bigint) * 60000
		WHERE p.topic_id = $1 AND p.partition < $2`, l.topic, to, P, l.cfg.RecordsPerRow, l.base); err != nil {
		return fmt.Errorf("scale: high watermarks: %w", err)
	}
	start := time.Now()
	if _, err := l.conn.Exec(ctx, `VACUUM (ANALYZE) batches`); err != nil {
		return fmt.Errorf("scale: vacuum: %w", err)
	}
	if _, err := l.conn.Exec(ctx, `VACUUM (ANALYZE) segments`); err != nil {
		return fmt.Errorf("scale: vacuum: %w", err)
	}
	pr("index: vacuum analyze %v", time.Since(start).Round(time.Second))
	return nil
}

// rowSource generates rows [next, end) for COPY.
type rowSource struct {
	l         *loader
	from      int64
	next, end int64
	P, per    int64
	seg       map[int64]int64
	vals      [11]any
	pr        logf
	started   time.Time
	lastLog   time.Time
	err       error
}

func (s *rowSource) Next() bool {
	if s.next >= s.end {
		return false
	}
	r := s.next
	s.next++
	p, k := r%s.P, r/s.P
	rpr := s.l.cfg.RecordsPerRow
	segID, ok := s.seg[r/s.per]
	if !ok {
		s.err = fmt.Errorf("scale: no segment for row %d", r)
		return false
	}
	// Each partition's timestamps grow with its rows: a row's running
	// maximum is its own max timestamp.
	s.vals = [11]any{s.l.topic, int32(p), k * rpr, k*rpr + rpr - 1, int32(rpr), s.l.rowTime(k), segID,
		(r % s.per) * (1 << 20), int32(1 << 20), int32(max(rpr/10, 1)), s.l.rowTime(k)}
	if now := time.Now(); now.Sub(s.lastLog) > 30*time.Second {
		s.lastLog = now
		if r > s.from {
			s.pr("index: row %d of %d (%.0f rows/s)", r, s.end, float64(r-s.from)/now.Sub(s.started).Seconds())
		}
	}
	return true
}

func (s *rowSource) Values() ([]any, error) { return s.vals[:], nil }
func (s *rowSource) Err() error             { return s.err }

func (l *loader) sizes(ctx context.Context, st *IndexStep) error {
	err := l.conn.QueryRow(ctx, `SELECT pg_total_relation_size('batches'), pg_relation_size('batches_pkey'), pg_total_relation_size('segments')`).
		Scan(&st.BatchesBytes, &st.PKeyBytes, &st.SegmentsBytes)
	if err != nil {
		return fmt.Errorf("scale: sizes: %w", err)
	}
	// The B-tree metapage holds the root's level; pageinspect may be
	// missing, and the height is then estimated from the fanout.
	var level int
	if _, err := l.conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pageinspect`); err == nil {
		if err := l.conn.QueryRow(ctx, `SELECT level FROM bt_metap('batches_pkey')`).Scan(&level); err == nil {
			st.PKeyLevels = level + 1
		}
	}
	return nil
}

// lookups runs the step's lookups and reads the cache figures around them.
func lookups(ctx context.Context, store *metadata.Store, conn *pgx.Conn, cfg IndexConfig, topic, rows, base int64, st *IndexStep) error {
	smp := &sampler{conn: conn}
	_, _ = conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`)
	before, err := smp.counters(ctx)
	if err != nil {
		return err
	}
	P := int64(cfg.Partitions)
	perPart := func(p int64) int64 { // rows of partition p
		if rows <= p {
			return 0
		}
		return (rows-1-p)/P + 1
	}
	statements := false
	// Buffer hits and reads of the lookups: from pg_stat_statements when
	// the server loads it (exact, counted at each statement's end).
	var blksHit, blksRead int64
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err == nil {
		_, err = conn.Exec(ctx, `SELECT pg_stat_statements_reset()`)
		statements = err == nil
	}
	st.Server = map[string]ServerTime{}
	kinds := []struct {
		name string
		out  *OpResult
		run  func(ctx context.Context, rng *rand.Rand) error
	}{
		{OpLookupTail, &st.Tail, func(ctx context.Context, rng *rand.Rand) error {
			p := rng.Int64N(P)
			n := perPart(p)
			_, _, err := store.LookupBatches(ctx, topic, int32(p), max(n*cfg.RecordsPerRow-1, 0), 1<<20, 1000)
			return err
		}},
		{OpLookupRandom, &st.Random, func(ctx context.Context, rng *rand.Rand) error {
			p := rng.Int64N(P)
			var off int64
			if n := perPart(p); n > 0 {
				off = rng.Int64N(n * cfg.RecordsPerRow)
			}
			_, _, err := store.LookupBatches(ctx, topic, int32(p), off, 1<<20, 1000)
			return err
		}},
		{"lookup timestamp", &st.Timestamp, func(ctx context.Context, rng *rand.Rand) error {
			p := rng.Int64N(P)
			// A time near the partition's tail: its last tenth.
			n := perPart(p)
			k := n - 1 - rng.Int64N(max(n/10, 1))
			_, _, err := store.FirstBatchAtOrAfter(ctx, topic, int32(p), base+max(k, 0)*60_000)
			return err
		}},
	}
	for _, kind := range kinds {
		h := bench.NewHistogram()
		var mu sync.Mutex
		var errs int64
		var lastErr string
		var wg sync.WaitGroup
		next := make(chan struct{}, cfg.Lookups)
		for i := 0; i < cfg.Lookups; i++ {
			next <- struct{}{}
		}
		close(next)
		began := time.Now()
		for c := 0; c < cfg.Concurrency; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
				for range next {
					lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					start := time.Now()
					err := kind.run(lctx, rng)
					d := time.Since(start)
					cancel()
					mu.Lock()
					if err != nil {
						errs++
						lastErr = err.Error()
					} else {
						h.Record(d)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
		if statements {
			var calls, hit, read int64
			var total, most float64
			err := conn.QueryRow(ctx, `
				SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0), coalesce(max(max_exec_time), 0),
				       coalesce(sum(shared_blks_hit), 0)::bigint, coalesce(sum(shared_blks_read), 0)::bigint FROM pg_stat_statements
				WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'`).Scan(&calls, &total, &most, &hit, &read)
			if err == nil {
				blksHit += hit
				blksRead += read
			}
			if err == nil && calls > 0 {
				n := float64(cfg.Lookups)
				st.Server[kind.name] = ServerTime{MeanMs: total / n, MaxMs: most, Statements: float64(calls) / n}
			}
			_, _ = conn.Exec(ctx, `SELECT pg_stat_statements_reset()`)
		}
		sum := h.Summary()
		*kind.out = OpResult{Op: kind.name, Count: sum.Count, PerSec: float64(sum.Count) / time.Since(began).Seconds(), P50: sum.P50, P99: sum.P99, Max: sum.Max,
			Errors: errs, LastErr: lastErr}
	}
	if !statements {
		// pg_stat_database instead: backends publish its counters at most
		// once a second, so the figures are approximate.
		_, _ = conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`)
		after, err := smp.counters(ctx)
		if err != nil {
			return err
		}
		blksHit, blksRead = after.blksHit-before.blksHit, after.blksRead-before.blksRead
	}
	if reads := float64(blksHit + blksRead); reads > 0 {
		st.HitRatio = float64(blksHit) / reads
	}
	st.BlocksPerLookup = float64(blksRead) / float64(3*cfg.Lookups)
	return nil
}
