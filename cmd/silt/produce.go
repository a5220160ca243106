package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"silt/client"
	"silt/problem"
)

const synopsisProduce = "silt produce TOPIC [-K SEP] [--partition P [--expected-offset N]] [--header k=v ...] [--batch-records N] [--batch-linger D] < lines"

// produceConfig is what `silt produce` is configured with.
type produceConfig struct {
	topic        string
	keySep       []byte // nil: lines are values with null keys
	partition    int32  // -1: the producer chooses
	headers      []client.Header
	batchRecords int
	batchBytes   int64
	linger       time.Duration
	maxLine      int64
	// expected >= 0 makes every batch a conditional append: the first at
	// that offset, each next one where the previous ended.
	expected int64
}

func parseProduceArgs(args []string) (*apiFlags, produceConfig, error) {
	fs := newFlagSet("produce")
	api := addAPIFlags(fs)
	var (
		keySep, keySepShort string
		partition           int
		headers             []string
		cfg                 produceConfig
	)
	fs.StringVar(&keySep, "key-separator", "", `split each line into key and value at the first occurrence of this (-K for short; escapes \t \n \r \0 \\ \xHH); a line without it is a value with a null key`)
	fs.FlagSet.StringVar(&keySepShort, "K", "", "short for --key-separator")
	fs.IntVar(&partition, "partition", -1, "write every record to this partition (default: by key, keyless lines round-robin per batch)")
	fs.ListVar(&headers, "header", "add a header key=value to every record; repeat for more")
	fs.IntVar(&cfg.batchRecords, "batch-records", 1000, "most lines per produce request")
	fs.BytesVar(&cfg.batchBytes, "batch-bytes", 1<<20, "send a request once its lines reach this size")
	fs.DurationVar(&cfg.linger, "batch-linger", 50*time.Millisecond, "longest a line waits for its batch to fill; 0 sends whenever input pauses")
	fs.BytesVar(&cfg.maxLine, "max-line-bytes", 16<<20, "longest line accepted")
	fs.Int64Var(&cfg.expected, "expected-offset", -1, "append only if the partition's next offset is this (optimistic concurrency; needs --partition); later batches follow on")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, cfg, err
	}
	if len(pos) != 1 {
		return nil, cfg, usageError(synopsisProduce, "expected a topic, got %d argument(s)", len(pos))
	}
	cfg.topic = pos[0]
	if keySepShort != "" { // given on the command line, so it wins
		keySep = keySepShort
	}
	if keySep != "" {
		if cfg.keySep, err = parseSeparator(keySep); err != nil {
			return nil, cfg, err
		}
	}
	if partition < -1 || partition > 1<<31-1 {
		return nil, cfg, fmt.Errorf("--partition %d: want a partition number", partition)
	}
	cfg.partition = int32(partition)
	for _, h := range headers {
		k, v, err := splitPair(h)
		if err != nil {
			return nil, cfg, fmt.Errorf("--header %w", err)
		}
		cfg.headers = append(cfg.headers, client.Header{Key: k, Value: []byte(v)})
	}
	switch {
	case cfg.batchRecords < 1:
		return nil, cfg, errors.New("--batch-records must be positive")
	case cfg.batchBytes < 1:
		return nil, cfg, errors.New("--batch-bytes must be positive")
	case cfg.linger < 0:
		return nil, cfg, errors.New("--batch-linger must not be negative")
	case cfg.maxLine < 1:
		return nil, cfg, errors.New("--max-line-bytes must be positive")
	case cfg.expected < -1:
		return nil, cfg, errors.New("--expected-offset must not be negative")
	case cfg.expected >= 0 && cfg.partition < 0:
		return nil, cfg, errors.New("--expected-offset needs --partition")
	}
	return api, cfg, nil
}

// runProduceCmd sends the lines of stdin as records, in batches, through
// an idempotent producer: a retried batch is never written twice.
func runProduceCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	api, cfg, err := parseProduceArgs(args)
	if err != nil {
		return err
	}
	c, err := api.client()
	if err != nil {
		return err
	}
	p, err := c.NewIdempotentProducer(ctx, cfg.topic, client.IdempotentOptions{})
	if err != nil {
		return err
	}
	sum := &produceSummary{topic: cfg.topic, last: map[int32]int64{}, counts: map[int32]int{}}
	next := cfg.expected
	err = produceLines(ctx, stdin, cfg, func(msgs []client.Message) error {
		var opts []client.ProduceOption
		if next >= 0 {
			opts = append(opts, client.WithExpectedOffset(next))
		}
		res, err := p.Send(ctx, msgs, opts...)
		if err != nil {
			var ce *client.Error
			if errors.As(err, &ce) && ce.Code == problem.CodeOffsetMismatch {
				return fmt.Errorf("partition %d is at offset %d, not %d: nothing written: %w", cfg.partition, ce.NextOffset, next, err)
			}
			return err
		}
		if next >= 0 {
			next = res.Offsets[len(res.Offsets)-1].Offset + 1
		}
		sum.add(res)
		return nil
	})
	sum.write(stderr)
	if err != nil {
		return fmt.Errorf("after %d records: %w", sum.records, err)
	}
	return nil
}

// message turns one input line into a record.
func (cfg *produceConfig) message(line []byte) client.Message {
	m := client.Message{Value: line, Headers: cfg.headers}
	if cfg.keySep != nil {
		m.Key, m.Value = splitKey(line, cfg.keySep)
	}
	if cfg.partition >= 0 {
		m.Partition = client.Partition(cfg.partition)
	}
	return m
}

// splitKey splits line at the first sep into key and value; without sep
// the whole line is the value and the key is null.
func splitKey(line, sep []byte) (key, value []byte) {
	k, v, found := bytes.Cut(line, sep)
	if !found {
		return nil, line
	}
	return k, v
}

// produceLines reads lines from r and hands batches to send: a batch
// goes when it holds batchRecords lines or batchBytes bytes, when its
// first line has waited linger, and at the end of the input.
func produceLines(ctx context.Context, r io.Reader, cfg produceConfig, send func([]client.Message) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan []byte, cfg.batchRecords)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			line, err := readLine(br, cfg.maxLine)
			if line != nil {
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					readErr <- fmt.Errorf("read stdin: %w", err)
				}
				return
			}
		}
	}()

	var batch []client.Message
	var size int64
	var timer *time.Timer
	var timerC <-chan time.Time
	flush := func() error {
		if timer != nil {
			timer.Stop()
			timer, timerC = nil, nil
		}
		if len(batch) == 0 {
			return nil
		}
		err := send(batch)
		batch, size = nil, 0
		return err
	}
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				if err := flush(); err != nil {
					return err
				}
				select {
				case err := <-readErr:
					return err
				default:
					return nil
				}
			}
			batch = append(batch, cfg.message(line))
			size += int64(len(line))
			if len(batch) == 1 && cfg.linger > 0 {
				timer = time.NewTimer(cfg.linger)
				timerC = timer.C
			}
			full := len(batch) >= cfg.batchRecords || size >= cfg.batchBytes
			if full || (cfg.linger == 0 && len(lines) == 0) {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-timerC:
			timer, timerC = nil, nil
			if err := flush(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readLine returns the next line without its "\n", or the last,
// unterminated one; (nil, io.EOF) at the end.
func readLine(br *bufio.Reader, max int64) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if int64(len(line)) > max+1 {
			return nil, fmt.Errorf("a line is longer than %d bytes (see --max-line-bytes)", max)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, io.EOF
		default:
			return nil, err
		}
	}
}

// produceSummary counts what was produced, for the report on stderr.
type produceSummary struct {
	topic    string
	records  int
	requests int
	counts   map[int32]int
	last     map[int32]int64
}

func (s *produceSummary) add(res client.ProduceResult) {
	s.requests++
	for _, o := range res.Offsets {
		s.records++
		s.counts[o.Partition]++
		s.last[o.Partition] = max(s.last[o.Partition], o.Offset)
	}
}

func (s *produceSummary) write(w io.Writer) {
	fmt.Fprintf(w, "produced %s to %s in %s\n", plural(s.records, "record"), s.topic, plural(s.requests, "request"))
	for _, p := range slices.Sorted(maps.Keys(s.counts)) {
		fmt.Fprintf(w, "  partition %d: %s, last offset %d\n", p, plural(s.counts[p], "record"), s.last[p])
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
