package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/client"
	"silt/internal/agenttest"
	"silt/partitioner"
)

// consumedJSON is a line of `consume --format json`.
type consumedJSON struct {
	Partition int32   `json:"partition"`
	Offset    int64   `json:"offset"`
	Timestamp int64   `json:"timestamp"`
	Key       *string `json:"key"`
	KeyB64    *string `json:"key_b64"`
	Value     *string `json:"value"`
	ValueB64  *string `json:"value_b64"`
	Headers   []struct {
		Key      string  `json:"key"`
		Value    *string `json:"value"`
		ValueB64 *string `json:"value_b64"`
	} `json:"headers"`
}

func parseConsumed(t *testing.T, out string) []consumedJSON {
	t.Helper()
	var recs []consumedJSON
	for line := range strings.Lines(out) {
		var r consumedJSON
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func sortedLines(s string) []string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	slices.Sort(lines)
	return lines
}

func TestProduceThenConsume(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	url := "--url=" + a.URL
	silt(t, nil, "topic", "create", "orders", "--partitions", "3", url).ok(t)

	keys := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace"}
	var input strings.Builder
	for i, k := range keys {
		fmt.Fprintf(&input, "%s:order-%d:%s\n", k, i, strings.Repeat("x", i))
	}
	input.WriteString("no-separator-here") // no key, and no final newline
	r := silt(t, strings.NewReader(input.String()), "produce", "orders", "-K", ":", "--header", "src=cli", "--header", "empty=", "--batch-records", "3", "--batch-linger", "1h", url).ok(t)
	if !strings.Contains(r.stderr, "produced 8 records to orders in 3 requests") {
		t.Fatalf("summary: %s", r.stderr)
	}

	// Where each record went, by the partitioner, in order per partition.
	perPartition := map[int32][]string{}
	for i, k := range keys {
		p := partitioner.ForKey([]byte(k), 3)
		perPartition[p] = append(perPartition[p], fmt.Sprintf("order-%d:%s", i, strings.Repeat("x", i)))
	}
	for p, vals := range perPartition {
		if !strings.Contains(r.stderr, fmt.Sprintf("partition %d: ", p)) {
			t.Fatalf("summary lacks partition %d: %s", p, r.stderr)
		}
		// --format value, one partition: exact order.
		got := silt(t, nil, "consume", "orders", "--partition", fmt.Sprint(p), url).ok(t).stdout
		got = strings.ReplaceAll(got, "no-separator-here\n", "") // the keyless line's partition is round-robin
		if want := strings.Join(vals, "\n") + "\n"; got != want {
			t.Fatalf("partition %d values:\n%q\nwant\n%q", p, got, want)
		}
	}

	// --format kv over all partitions, with a custom separator.
	got := silt(t, nil, "consume", "orders", "--format", "kv", "--key-separator", "=", url).ok(t).stdout
	var want []string
	for i, k := range keys {
		want = append(want, fmt.Sprintf("%s=order-%d:%s", k, i, strings.Repeat("x", i)))
	}
	want = append(want, "=no-separator-here")
	slices.Sort(want)
	if fmt.Sprint(sortedLines(got)) != fmt.Sprint(want) {
		t.Fatalf("kv:\n%s", got)
	}
	// The default kv separator is a tab.
	if got := silt(t, nil, "consume", "orders", "--format=kv", url).ok(t).stdout; !strings.Contains(got, "alice\torder-0:\n") {
		t.Fatalf("kv with tab:\n%s", got)
	}

	// --format json.
	recs := parseConsumed(t, silt(t, nil, "consume", "orders", "--format", "json", url).ok(t).stdout)
	if len(recs) != 8 {
		t.Fatalf("%d json records", len(recs))
	}
	seen := 0
	for _, rec := range recs {
		if rec.Timestamp < time.Now().Add(-time.Hour).UnixMilli() || len(rec.Headers) != 2 ||
			rec.Headers[0].Key != "src" || *rec.Headers[0].Value != "cli" || rec.Headers[1].Key != "empty" || *rec.Headers[1].Value != "" {
			t.Fatalf("json record %+v", rec)
		}
		if rec.Key == nil {
			if *rec.Value != "no-separator-here" {
				t.Fatalf("keyless record %+v", rec)
			}
			continue
		}
		i := slices.Index(keys, *rec.Key)
		if i < 0 || rec.Partition != partitioner.ForKey([]byte(*rec.Key), 3) || *rec.Value != fmt.Sprintf("order-%d:%s", i, strings.Repeat("x", i)) {
			t.Fatalf("json record %+v", rec)
		}
		seen++
	}
	if seen != len(keys) {
		t.Fatalf("%d keyed records", seen)
	}
	// Every fetch encoding prints the same (batches is the default).
	all := silt(t, nil, "consume", "orders", "--format", "json", url).ok(t).stdout
	for _, enc := range []string{"batches", "binary", "json", "ndjson"} {
		if got := silt(t, nil, "consume", "orders", "--format", "json", "--fetch-encoding", enc, url).ok(t).stdout; got != all {
			t.Fatalf("--fetch-encoding %s:\n%s\nwant\n%s", enc, got, all)
		}
	}
	silt(t, nil, "consume", "orders", "--fetch-encoding", "xml", url).fails(t, "--fetch-encoding")

	// Limits and start offsets.
	if got := silt(t, nil, "consume", "orders", "--max-records", "2", url).ok(t).stdout; strings.Count(got, "\n") != 2 {
		t.Fatalf("max-records 2:\n%s", got)
	}
	// 7 keys over 3 partitions: one partition holds at least 3.
	p := int32(0)
	for q, vals := range perPartition {
		if len(vals) >= 3 {
			p = q
		}
	}
	if got := silt(t, nil, "consume", "orders", "--partition", fmt.Sprint(p), "--offset", "1", "--max-records", "1", url).ok(t).stdout; got != perPartition[p][1]+"\n" {
		t.Fatalf("offset 1 of partition %d: %q", p, got)
	}
	if got := silt(t, nil, "consume", "orders", "--offset", "latest", url).ok(t).stdout; got != "" {
		t.Fatalf("latest without --follow: %q", got)
	}
}

func TestProduceBinaryLinesAndPartition(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	url := "--url=" + a.URL
	silt(t, nil, "topic", "create", "raw", "--partitions", "2", url).ok(t)
	input := "\xff\xfe\tbinary\n\n{\"json\":true}\n"
	r := silt(t, strings.NewReader(input), "produce", "raw", "--partition", "1", "--key-separator", `\t`, url).ok(t)
	if !strings.Contains(r.stderr, "produced 3 records") || !strings.Contains(r.stderr, "partition 1: 3 records, last offset 2") {
		t.Fatalf("summary: %s", r.stderr)
	}
	recs := parseConsumed(t, silt(t, nil, "consume", "raw", "--format", "json", url).ok(t).stdout)
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	if recs[0].Partition != 1 || recs[0].KeyB64 == nil || *recs[0].KeyB64 != "//4=" || *recs[0].Value != "binary" {
		t.Fatalf("binary key: %+v", recs[0])
	}
	if recs[1].Key != nil || recs[1].Value == nil || *recs[1].Value != "" {
		t.Fatalf("empty line: %+v", recs[1])
	}
	if *recs[2].Value != `{"json":true}` || recs[2].Offset != 2 {
		t.Fatalf("json line: %+v", recs[2])
	}
	if got := silt(t, nil, "consume", "raw", url).ok(t).stdout; got != "binary\n\n{\"json\":true}\n" {
		t.Fatalf("values: %q", got)
	}
	// Null keys print as nothing before the separator.
	if got := silt(t, nil, "consume", "raw", "--format", "kv", url).ok(t).stdout; got != "\xff\xfe\tbinary\n\t\n\t{\"json\":true}\n" {
		t.Fatalf("kv: %q", got)
	}
}

func TestProduceAndConsumeErrors(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	url := "--url=" + a.URL
	silt(t, strings.NewReader("x\n"), "produce", "missing", url).fails(t, "topic_not_found")
	silt(t, nil, "consume", "missing", url).fails(t, "topic_not_found")
	silt(t, nil, "produce", url).fails(t, "expected a topic")
	silt(t, nil, "consume", "a", "b", url).fails(t, "expected a topic")
	// Records are priced by their encoded size: 26 bytes for "ok", 49 for
	// the long line.
	silt(t, nil, "topic", "create", "t", "--config", "max.message.bytes=40", url).ok(t)
	r := silt(t, strings.NewReader("ok\nthis line is far too long\n"), "produce", "t", "--batch-records", "1", "--batch-linger", "1h", url)
	r.fails(t, "record_too_large")
	if !strings.Contains(r.stderr, "produced 1 record to t") {
		t.Fatalf("the summary must report what was produced before the failure: %s", r.stderr)
	}
	silt(t, nil, "consume", "t", "--partition", "1", url).fails(t, "no partition 1")
	silt(t, nil, "consume", "t", "--format", "xml", url).fails(t, "want value, kv or json")
	silt(t, nil, "consume", "t", "--offset", "first", url).fails(t, "want earliest, latest")
	silt(t, nil, "consume", "t", "--offset-reset", "nearest", url).fails(t, "want earliest, latest or error")
}

// An offset out of range is an error unless --offset-reset moves it: an
// offset past the high watermark no longer reads nothing silently.
func TestConsumeOffsetOutOfRange(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	url := "--url=" + a.URL
	silt(t, nil, "topic", "create", "t", url).ok(t)
	silt(t, strings.NewReader("a\nb\n"), "produce", "t", url).ok(t)
	silt(t, nil, "consume", "t", "--offset", "7", url).fails(t, "offset 7 is out of range: the partition holds offsets from 0 up to the high watermark 2")
	silt(t, nil, "consume", "t", "--offset", "7", "--follow", url).fails(t, "offset_out_of_range")
	r := silt(t, nil, "consume", "t", "--offset", "7", "--offset-reset", "earliest", url).ok(t)
	if r.stdout != "a\nb\n" || !strings.Contains(r.stderr, "offset 7 is out of range; reading from 0") {
		t.Fatalf("reset to earliest: stdout %q stderr %q", r.stdout, r.stderr)
	}
	r = silt(t, nil, "consume", "t", "--offset", "7", "--offset-reset", "latest", url).ok(t)
	if r.stdout != "" || !strings.Contains(r.stderr, "reading from 2") {
		t.Fatalf("reset to latest: stdout %q stderr %q", r.stdout, r.stderr)
	}
	r = silt(t, nil, "consume", "t", "--offset", "7", "--offset-reset", "earliest", "--follow", "--max-records", "2", url).ok(t)
	if r.stdout != "a\nb\n" {
		t.Fatalf("follow reset to earliest: stdout %q stderr %q", r.stdout, r.stderr)
	}
	silt(t, nil, "consume", "t", "--group", "g", "--offset-reset", "error", url).fails(t, "with --group, --offset-reset is earliest or latest")
}

func TestConsumeFollow(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	url := "--url=" + a.URL
	silt(t, nil, "topic", "create", "live", "--partitions", "2", url).ok(t)
	silt(t, strings.NewReader("old-0\nold-1\n"), "produce", "live", "--partition", "0", url).ok(t)

	// Follow from the current end of partition 1 and of partition 0 (by
	// offset, so that records produced before the stream connects count).
	done := make(chan cliResult, 1)
	go func() {
		done <- silt(t, nil, "consume", "live", "--partition", "0", "--offset", "2", "--follow", "--max-records", "3", url)
	}()
	c, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Produce(t.Context(), "live", []client.Message{{Partition: client.Partition(0), Value: fmt.Appendf(nil, "new-%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	r := (<-done).ok(t)
	if r.stdout != "new-0\nnew-1\nnew-2\n" {
		t.Fatalf("follow: %q", r.stdout)
	}

	// All partitions, from the start: everything there is, interleaved.
	silt(t, strings.NewReader("p1\n"), "produce", "live", "--partition", "1", url).ok(t)
	r = silt(t, nil, "consume", "live", "--follow", "--max-records", "6", url).ok(t)
	if got := sortedLines(r.stdout); fmt.Sprint(got) != "[new-0 new-1 new-2 old-0 old-1 p1]" {
		t.Fatalf("follow all: %q", r.stdout)
	}
}

// --follow ends cleanly when interrupted.
func TestConsumeFollowInterrupted(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	url := "--url=" + a.URL
	silt(t, nil, "topic", "create", "quiet", url).ok(t)
	silt(t, strings.NewReader("one\n"), "produce", "quiet", url).ok(t)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"consume", "quiet", "--follow", url}, pw, io.Discard)
		pw.Close()
	}()
	// Once the record is printed, interrupt.
	buf := make([]byte, 4)
	if _, err := io.ReadFull(pr, buf); err != nil || string(buf) != "one\n" {
		t.Fatalf("read %q: %v", buf, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d after an interrupt", code)
	}
}

// --expected-offset makes produce a conditional append: the first batch
// lands only at that offset and each next one where the previous ended;
// a stale offset writes nothing and says where the partition is.
func TestProduceExpectedOffset(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	url := "--url=" + a.URL
	silt(t, nil, "topic", "create", "cas", "--partitions", "2", url).ok(t)
	silt(t, strings.NewReader("a\nb\nc\n"), "produce", "cas", "--partition", "1", "--expected-offset", "0", "--batch-records", "1", "--batch-linger", "1h", url).ok(t)
	r := silt(t, strings.NewReader("stale\n"), "produce", "cas", "--partition", "1", "--expected-offset", "1", url)
	r.fails(t, "partition 1 is at offset 3, not 1: nothing written")
	if !strings.Contains(r.stderr, "offset_mismatch") {
		t.Fatalf("the failure does not carry the problem code: %s", r.stderr)
	}
	silt(t, strings.NewReader("d\n"), "produce", "cas", "--partition", "1", "--expected-offset", "3", url).ok(t)
	if got := silt(t, nil, "consume", "cas", "--partition", "1", url).ok(t).stdout; got != "a\nb\nc\nd\n" {
		t.Fatalf("partition 1 holds %q", got)
	}
	if got := silt(t, nil, "consume", "cas", "--partition", "0", url).ok(t).stdout; got != "" {
		t.Fatalf("partition 0 holds %q", got)
	}
	silt(t, strings.NewReader("x\n"), "produce", "cas", "--expected-offset", "0", url).fails(t, "--expected-offset needs --partition")
	silt(t, strings.NewReader("x\n"), "produce", "cas", "--partition", "0", "--expected-offset", "-2", url).fails(t, "--expected-offset must not be negative")
}

// recreatingProxy forwards to an agent, and before it forwards the first
// request whose path ends in trigger, deletes the topic, creates it again
// under the same name and writes records into the new one: the moment
// when a reader that did not pin the topic's id would carry on in a
// different log.
func recreatingProxy(t *testing.T, agentURL, topic, trigger string) string {
	t.Helper()
	target, err := neturl.Parse(agentURL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(agentURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // event streams pass at once
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, trigger) {
			once.Do(func() {
				ctx := r.Context()
				if err := c.DeleteTopic(ctx, topic); err != nil {
					t.Errorf("delete: %v", err)
				}
				if _, err := c.CreateTopic(ctx, client.NewTopic{Name: topic, Partitions: 1}); err != nil {
					t.Errorf("create again: %v", err)
				}
				for i := range 2 {
					if _, err := c.Produce(ctx, topic, []client.Message{{Value: fmt.Appendf(nil, "new-%d", i)}}); err != nil {
						t.Errorf("produce to the new topic: %v", err)
					}
				}
			})
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// silt consume pins the id of the topic it described when it started: a
// topic deleted and created again under its name meanwhile ends the run
// with topic_id_mismatch, and nothing of the new topic is printed, whether
// it reads to the end or follows.
func TestConsumePinsTheTopic(t *testing.T) {
	for name, c := range map[string]struct {
		trigger string
		args    []string
	}{
		"read to the end": {"/offsets", nil},
		"follow":          {"/stream", []string{"--follow", "--max-records", "4"}},
	} {
		t.Run(name, func(t *testing.T) {
			a := agenttest.Start(t, agenttest.Options{})
			silt(t, nil, "topic", "create", "pinned", "--url="+a.URL).ok(t)
			silt(t, strings.NewReader("old-0\nold-1\n"), "produce", "pinned", "--url="+a.URL).ok(t)
			via := recreatingProxy(t, a.URL, "pinned", c.trigger)
			r := silt(t, nil, append([]string{"consume", "pinned", "--offset", "earliest", "--url=" + via}, c.args...)...)
			r.fails(t, "topic_id_mismatch")
			if strings.Contains(r.stdout, "new-") {
				t.Fatalf("printed records of the new topic: %q", r.stdout)
			}
			// The new topic is there to read for a run that starts now.
			if got := silt(t, nil, "consume", "pinned", "--url="+a.URL).ok(t).stdout; got != "new-0\nnew-1\n" {
				t.Fatalf("a new run reads %q", got)
			}
		})
	}
}
