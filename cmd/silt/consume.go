package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"silt/client"
)

const synopsisConsume = "silt consume TOPIC [--partition P] [--offset earliest|latest|N] [--offset-reset earliest|latest|error] [--follow] [--group G [--session-timeout D]] [--max-records N] [--format value|kv|json] [--fetch-encoding batches|binary|json|ndjson]"

// consumeConfig is what `silt consume` is configured with.
type consumeConfig struct {
	topic     string
	partition int32 // -1: all
	offset    int64 // or client.Earliest, client.Latest
	// reset is where an offset out of range goes: client.ResetEarliest,
	// ResetLatest or ResetError; resetSet says --offset-reset was given.
	reset    string
	resetSet bool
	// topicID pins the topic read (client.FetchOptions.TopicID).
	topicID    int64
	follow     bool
	maxRecords int // 0: no limit
	format     recordFormat
	// encoding is the fetch body form asked of the agent.
	encoding client.Encoding
	// group, when set, consumes as a member of this consumer group from
	// its committed offsets (the group's assignment replaces --partition).
	group          string
	sessionTimeout time.Duration
}

func parseConsumeArgs(args []string) (*apiFlags, consumeConfig, error) {
	fs := newFlagSet("consume")
	api := addAPIFlags(fs)
	var (
		cfg                             consumeConfig
		partition                       int
		offset, format, kvSep, encoding string
	)
	fs.IntVar(&partition, "partition", -1, "read only this partition (default: all, one after the other; with --follow, interleaved)")
	fs.StringVar(&offset, "offset", "earliest", "where to start in each partition: earliest, latest or an offset")
	fs.StringVar(&cfg.reset, "offset-reset", "", "where an offset out of range (below the log start, or past the high watermark) goes: earliest, latest or error (default: earliest with --offset earliest, latest with --offset latest, error with an offset)")
	fs.BoolVar(&cfg.follow, "follow", false, "keep printing records as they are produced (a server-sent-events tail) until interrupted")
	fs.IntVar(&cfg.maxRecords, "max-records", 0, "stop after this many records (0: no limit)")
	fs.StringVar(&format, "format", "value", "value (the value and a newline), kv (key, separator, value) or json (one object per line)")
	fs.StringVar(&encoding, "fetch-encoding", "batches", "the fetch body form asked of the agent: batches (the stored batches, decoded here), binary (records encoded by the agent), json or ndjson; for reads without --follow or --group")
	fs.StringVar(&kvSep, "key-separator", `\t`, `what separates key and value with --format kv (escapes \t \n \r \0 \\ \xHH)`)
	fs.StringVar(&cfg.group, "group", "", "consume as a member of this consumer group, from its committed offsets, committing as records are printed")
	fs.DurationVar(&cfg.sessionTimeout, "session-timeout", 10*time.Second, "with --group: how long the group waits for this member's heartbeat")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, cfg, err
	}
	if len(pos) != 1 {
		return nil, cfg, usageError(synopsisConsume, "expected a topic, got %d argument(s)", len(pos))
	}
	cfg.topic = pos[0]
	if partition < -1 || partition > 1<<31-1 {
		return nil, cfg, fmt.Errorf("--partition %d: want a partition number", partition)
	}
	cfg.partition = int32(partition)
	if cfg.offset, err = parseOffset(offset); err != nil {
		return nil, cfg, err
	}
	cfg.resetSet = cfg.reset != ""
	switch cfg.reset {
	case "":
		switch cfg.offset {
		case client.Earliest:
			cfg.reset = client.ResetEarliest
		case client.Latest:
			cfg.reset = client.ResetLatest
		default:
			cfg.reset = client.ResetError
		}
	case client.ResetEarliest, client.ResetLatest, client.ResetError:
	default:
		return nil, cfg, fmt.Errorf("--offset-reset %q: want earliest, latest or error", cfg.reset)
	}
	if cfg.maxRecords < 0 {
		return nil, cfg, errors.New("--max-records must not be negative")
	}
	sep, err := parseSeparator(kvSep)
	if err != nil {
		return nil, cfg, err
	}
	if cfg.format, err = formatFor(format, sep); err != nil {
		return nil, cfg, err
	}
	encodings := map[string]client.Encoding{"batches": client.Batches, "binary": client.Binary, "json": client.JSON, "ndjson": client.NDJSON}
	var ok bool
	if cfg.encoding, ok = encodings[encoding]; !ok {
		return nil, cfg, fmt.Errorf("--fetch-encoding %q: want batches, binary, json or ndjson", encoding)
	}
	return api, cfg, nil
}

// parseOffset reads earliest, latest or a non-negative offset.
func parseOffset(s string) (int64, error) {
	switch s {
	case "earliest":
		return client.Earliest, nil
	case "latest":
		return client.Latest, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--offset %q: want earliest, latest or a non-negative offset", s)
	}
	return n, nil
}

// runConsumeCmd prints records. Without --follow it reads each partition
// up to the high watermark it saw when it started; with --follow it tails
// every partition over server-sent events.
func runConsumeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	api, cfg, err := parseConsumeArgs(args)
	if err != nil {
		return err
	}
	c, err := api.client()
	if err != nil {
		return err
	}
	if cfg.group != "" {
		if cfg.partition >= 0 {
			return errors.New("--partition does not combine with --group: the group assigns partitions")
		}
		reset := client.ResetLatest
		if cfg.offset == client.Earliest {
			reset = client.ResetEarliest
		} else if cfg.offset != client.Latest {
			return errors.New("with --group, --offset is earliest or latest: where to start without a committed offset")
		}
		if cfg.resetSet {
			// The group's auto_offset_reset: where members start without a
			// committed offset and go when retention passes them.
			if cfg.reset == client.ResetError {
				return errors.New("with --group, --offset-reset is earliest or latest: the group moves out-of-range positions itself")
			}
			reset = cfg.reset
		}
		return consumeGroup(ctx, c, cfg.group, []string{cfg.topic}, groupConsumeOptions{
			SessionTimeout: cfg.sessionTimeout, AutoOffsetReset: reset, MaxRecords: cfg.maxRecords, Format: cfg.format, Log: stderr,
		}, stdout)
	}
	t, parts, err := consumePartitions(ctx, c, cfg)
	if err != nil {
		return err
	}
	// Every read pins the topic described: one deleted and created again
	// under its name meanwhile fails the reads (topic_id_mismatch) rather
	// than being read from offsets of the old one.
	cfg.topicID = t.ID
	out := &recordWriter{w: bufio.NewWriter(stdout), format: cfg.format, left: cfg.maxRecords}
	if cfg.follow {
		err = follow(ctx, c, cfg, parts, out)
	} else {
		err = readToEnd(ctx, c, cfg, parts, out, stderr)
	}
	if ferr := out.w.Flush(); err == nil {
		err = ferr
	}
	if errors.Is(err, errEnough) {
		return nil
	}
	return err
}

// consumePartitions describes the topic and lists the partitions to read.
func consumePartitions(ctx context.Context, c *client.Client, cfg consumeConfig) (client.Topic, []int32, error) {
	t, err := c.DescribeTopic(ctx, cfg.topic)
	if err != nil {
		return t, nil, err
	}
	if cfg.partition >= 0 {
		if cfg.partition >= t.Partitions {
			return t, nil, fmt.Errorf("topic %s has %d partitions; there is no partition %d", cfg.topic, t.Partitions, cfg.partition)
		}
		return t, []int32{cfg.partition}, nil
	}
	parts := make([]int32, t.Partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	return t, parts, nil
}

// errEnough ends reading once --max-records were printed.
var errEnough = errors.New("enough records")

// recordWriter prints records in a format and counts them.
type recordWriter struct {
	w      *bufio.Writer
	format recordFormat
	left   int // records still to print when limited; 0 with no limit
	n      int
}

// write prints r, returning errEnough after the last one wanted.
func (rw *recordWriter) write(r client.Record) error {
	if err := rw.format(rw.w, r); err != nil {
		return err
	}
	rw.n++
	if rw.left > 0 && rw.n >= rw.left {
		return errEnough
	}
	return nil
}

// readToEnd reads each partition in turn, from the start offset up to
// the high watermark it has when reading begins.
func readToEnd(ctx context.Context, c *client.Client, cfg consumeConfig, parts []int32, out *recordWriter, stderr io.Writer) error {
	for _, p := range parts {
		if err := readPartition(ctx, c, cfg, p, out, stderr); err != nil {
			return err
		}
	}
	return nil
}

func readPartition(ctx context.Context, c *client.Client, cfg consumeConfig, p int32, out *recordWriter, stderr io.Writer) error {
	offs, err := c.ListOffsets(ctx, cfg.topic, p)
	if err != nil {
		return err
	}
	end := offs.HighWatermark
	pos := cfg.offset
	switch pos {
	case client.Earliest:
		pos = offs.LogStartOffset
	case client.Latest:
		pos = end
	}
	if pos < offs.LogStartOffset || pos > end {
		// Out of range before any fetch: one past the high watermark
		// would otherwise read nothing and say nothing.
		switch cfg.reset {
		case client.ResetEarliest:
			pos = offs.LogStartOffset
		case client.ResetLatest:
			pos = end
		default:
			return fmt.Errorf("%s/%d: offset %d is out of range: the partition holds offsets from %d up to the high watermark %d (see --offset-reset)",
				cfg.topic, p, cfg.offset, offs.LogStartOffset, end)
		}
		fmt.Fprintf(stderr, "silt consume: %s/%d: offset %d is out of range; reading from %d (--offset-reset %s)\n", cfg.topic, p, cfg.offset, pos, cfg.reset)
	}
	for pos < end {
		res, err := c.Fetch(ctx, cfg.topic, p, pos, client.FetchOptions{MaxRecords: 1000, OffsetReset: cfg.reset, TopicID: cfg.topicID, Encoding: cfg.encoding})
		if err != nil {
			return err
		}
		if res.Reset {
			// Retention removed records meanwhile.
			fmt.Fprintf(stderr, "silt consume: %s/%d: offset %d is out of range; reading from %d (--offset-reset %s)\n", cfg.topic, p, pos, res.ResetTo, cfg.reset)
		}
		for _, r := range res.Records {
			if r.Offset >= end {
				return nil
			}
			if err := out.write(r); err != nil {
				return err
			}
		}
		if res.NextOffset <= pos {
			return fmt.Errorf("fetch %s/%d: no progress at offset %d below high watermark %d", cfg.topic, p, pos, end)
		}
		pos = res.NextOffset
	}
	return nil
}

// follow tails every partition at once and prints records as they come,
// until ctx ends (a clean stop) or --max-records were printed.
func follow(ctx context.Context, c *client.Client, cfg consumeConfig, parts []int32, out *recordWriter) error {
	ctx, cancel := context.WithCancel(ctx)
	records := make(chan client.Record)
	errs := make(chan error, len(parts))
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, p := range parts {
		wg.Go(func() {
			for r, err := range c.Stream(ctx, cfg.topic, p, cfg.offset, client.StreamOptions{OffsetReset: cfg.reset, TopicID: cfg.topicID}) {
				if err != nil {
					errs <- err
					return
				}
				select {
				case records <- r:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	for {
		select {
		case r := <-records:
			if err := out.write(r); err != nil {
				return err
			}
			if err := out.w.Flush(); err != nil {
				return err
			}
		case err := <-errs:
			return err
		case <-ctx.Done():
			return nil // interrupted: a normal end of --follow
		}
	}
}

// recordFormat prints one record.
type recordFormat func(w *bufio.Writer, r client.Record) error

func formatFor(name string, kvSep []byte) (recordFormat, error) {
	switch name {
	case "value":
		return formatValue, nil
	case "kv":
		return func(w *bufio.Writer, r client.Record) error { return formatKV(w, r, kvSep) }, nil
	case "json":
		return formatJSON, nil
	}
	return nil, fmt.Errorf("--format %q: want value, kv or json", name)
}

// formatValue prints the value as is and a newline; a null value prints
// as an empty line.
func formatValue(w *bufio.Writer, r client.Record) error {
	w.Write(r.Value)
	return w.WriteByte('\n')
}

// formatKV prints key, separator, value and a newline.
func formatKV(w *bufio.Writer, r client.Record, sep []byte) error {
	w.Write(r.Key)
	w.Write(sep)
	w.Write(r.Value)
	return w.WriteByte('\n')
}

// formatJSON prints one JSON object per record: partition, offset,
// timestamp (Unix ms), key, value and headers. Bytes that are UTF-8 are
// JSON strings; other bytes are given base64 under key_b64, value_b64;
// null stays null.
func formatJSON(w *bufio.Writer, r client.Record) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"partition":%d,"offset":%d,"timestamp":%d,`, r.Partition, r.Offset, r.Timestamp.UnixMilli())
	appendBytesField(&b, "key", r.Key)
	b.WriteByte(',')
	appendBytesField(&b, "value", r.Value)
	b.WriteString(`,"headers":[`)
	for i, h := range r.Headers {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"key":`)
		appendString(&b, h.Key)
		b.WriteByte(',')
		appendBytesField(&b, "value", h.Value)
		b.WriteByte('}')
	}
	b.WriteString("]}\n")
	_, err := w.Write(b.Bytes())
	return err
}

// appendBytesField writes "name":"text", "name":null or
// "name_b64":"base64".
func appendBytesField(b *bytes.Buffer, name string, v []byte) {
	switch {
	case v == nil:
		fmt.Fprintf(b, `"%s":null`, name)
	case utf8.Valid(v):
		fmt.Fprintf(b, `"%s":`, name)
		appendString(b, string(v))
	default:
		fmt.Fprintf(b, `"%s_b64":"%s"`, name, base64.StdEncoding.EncodeToString(v))
	}
}

// appendString writes s as a JSON string, without HTML escaping.
func appendString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Truncate(b.Len() - 1)
}
