package ownership_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/metadata"
	"silt/objectstore"
	"silt/objectstore/objectstoretest"
	"silt/ownership"
	"silt/segment"
)

// quiet keeps the background janitor idle so tests drive it with RunJanitor.
func quiet(c *agentd.Config) {
	j := &c.Ownership.Janitor
	j.RetentionInterval, j.MergeInterval, j.CompactInterval, j.GCInterval, j.OrphanInterval = time.Hour, time.Hour, time.Hour, time.Hour, time.Hour
	j.MergeMinAge, j.GCGrace, j.OrphanAge = 0, 0, time.Hour
	j.MergeMinChunks = 8
	j.RewriteBytesPerSecond = 1 << 40
}

func post(t *testing.T, url, body string) []byte {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	return b
}

func get(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("%s: not within 60s", what)
		case <-tick.C:
		}
	}
}

type clusterJSON struct {
	Agents []struct {
		ID         string `json:"id"`
		Partitions []struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
			Epoch     int64  `json:"epoch"`
		} `json:"partitions"`
	} `json:"agents"`
}

// shares returns partitions owned per agent, failing on any partition
// owned twice or any repeated (partition, epoch).
func shares(t *testing.T, url string) map[string]int {
	t.Helper()
	var c clusterJSON
	if get(t, url+"/v1/cluster", &c) != http.StatusOK {
		return nil
	}
	out := map[string]int{}
	seen := map[string]bool{}
	for _, a := range c.Agents {
		for _, p := range a.Partitions {
			k := fmt.Sprintf("%s/%d", p.Topic, p.Partition)
			if seen[k] {
				t.Fatalf("partition %s owned twice", k)
			}
			seen[k] = true
		}
		out[a.ID] = len(a.Partitions)
	}
	return out
}

func balanced(got map[string]int, agents, each int) bool {
	if len(got) != agents {
		return false
	}
	for _, n := range got {
		if n != each {
			return false
		}
	}
	return true
}

// Leases spread evenly, move to the survivors when an agent leaves, and
// spread again when one joins.
func TestLeasesConvergeAndRebalance(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: quiet})
	post(t, a.URL+"/v1/topics", `{"name":"t","partitions":12}`)
	b := agenttest.Start(t, agenttest.Options{DatabaseURL: a.DatabaseURL, Bucket: a.Raw, Configure: quiet})
	c := agenttest.Start(t, agenttest.Options{DatabaseURL: a.DatabaseURL, Bucket: a.Raw, Configure: quiet})
	waitUntil(t, "4 partitions each", func() bool { return balanced(shares(t, a.URL), 3, 4) })
	c.Stop(t) // a clean stop releases at once
	waitUntil(t, "6 partitions each after one left", func() bool { return balanced(shares(t, a.URL), 2, 6) })
	agenttest.Start(t, agenttest.Options{DatabaseURL: a.DatabaseURL, Bucket: a.Raw, Configure: quiet})
	waitUntil(t, "4 each after one joined", func() bool { return balanced(shares(t, b.URL), 3, 4) })
}

func countObjects(t *testing.T, b objectstore.Bucket) (n int, size int64) {
	t.Helper()
	err := b.List(context.Background(), "", func(oi objectstore.ObjectInfo) error {
		n++
		size += oi.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size
}

func countRows(t *testing.T, s *metadata.Store, table string) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

type fetched struct {
	Records []struct {
		Offset    int64           `json:"offset"`
		Key       json.RawMessage `json:"key"`
		Value     json.RawMessage `json:"value"`
		ValueB64  *string         `json:"value_b64"`
		Timestamp int64           `json:"timestamp"`
	} `json:"records"`
	NextOffset     int64 `json:"next_offset"`
	HighWatermark  int64 `json:"high_watermark"`
	LogStartOffset int64 `json:"log_start_offset"`
}

// readAll fetches a partition from offset to its end; keys are offsets.
func readAll(t *testing.T, url, topic string, from int64) map[int64]string {
	t.Helper()
	out := map[int64]string{}
	for {
		var f fetched
		code := get(t, fmt.Sprintf("%s/v1/topics/%s/partitions/0/records?offset=%d&max_records=100000&max_bytes=67108864", url, topic, from), &f)
		if code != http.StatusOK {
			t.Fatalf("fetch %s from %d: %d", topic, from, code)
		}
		for _, r := range f.Records {
			out[r.Offset] = string(r.Key) + "=" + string(r.Value)
		}
		if f.NextOffset >= f.HighWatermark {
			return out
		}
		from = f.NextOffset
	}
}

// owning waits until a holds n partition leases.
func owning(t *testing.T, a *agenttest.Agent, n int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d leases held", n), func() bool { return len(a.Owner().Leases()) == n })
}

// noise returns n incompressible characters.
func noise(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func produceOne(t *testing.T, url, topic, body string) {
	t.Helper()
	post(t, url+"/v1/topics/"+topic+"/records", `{"records":[`+body+`]}`)
}

// Retention by bytes and by time: the log start advances, index rows and
// objects go, and reads from the new start stay correct.
func TestRetention(t *testing.T) {
	t.Parallel()
	bucket := agenttest.MinIOBucket(t)
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: func(c *agentd.Config) {
		quiet(c)
		c.Ownership.Janitor.MergeMinChunks = 1 << 30 // retention alone
	}})
	post(t, a.URL+"/v1/topics", `{"name":"bytes","partitions":1,"config":{"retention.bytes":20000}}`)
	post(t, a.URL+"/v1/topics", `{"name":"time","partitions":1,"config":{"retention.ms":60000}}`)
	owning(t, a, 2)
	val := noise(2000)
	for i := 0; i < 40; i++ {
		produceOne(t, a.URL, "bytes", fmt.Sprintf(`{"key":%d,"value":"%s%d"}`, i, val, i))
	}
	now := time.Now().UnixMilli()
	for i := 0; i < 10; i++ { // five old, five new
		ts := now - 3_600_000
		if i >= 5 {
			ts = now
		}
		produceOne(t, a.URL, "time", fmt.Sprintf(`{"value":%d,"timestamp":%d}`, i, ts))
	}
	objBefore, bytesBefore := countObjects(t, bucket)
	rowsBefore := countRows(t, a.Store(), "batches")
	a.Owner().RunJanitor(context.Background()) // retention, then GC with no grace
	a.Owner().RunJanitor(context.Background())
	objAfter, bytesAfter := countObjects(t, bucket)
	rowsAfter := countRows(t, a.Store(), "batches")
	t.Logf("retention: objects %d -> %d, bytes %d -> %d, index rows %d -> %d", objBefore, objAfter, bytesBefore, bytesAfter, rowsBefore, rowsAfter)
	if objAfter >= objBefore || bytesAfter >= bytesBefore || rowsAfter >= rowsBefore {
		t.Fatal("retention freed nothing")
	}
	var f fetched
	get(t, a.URL+"/v1/topics/bytes/partitions/0/records?offset=earliest", &f)
	if f.LogStartOffset == 0 || f.HighWatermark != 40 {
		t.Fatalf("bytes topic: log start %d hwm %d", f.LogStartOffset, f.HighWatermark)
	}
	got := readAll(t, a.URL, "bytes", f.LogStartOffset)
	if int64(len(got)) != 40-f.LogStartOffset || !strings.HasSuffix(got[39], `39"`) {
		t.Fatalf("read %d records after retention", len(got))
	}
	if code := get(t, a.URL+"/v1/topics/bytes/partitions/0/records?offset=0", nil); code != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("offset 0 after retention: %d, want 416", code)
	}
	get(t, a.URL+"/v1/topics/time/partitions/0/records?offset=earliest", &f)
	if f.LogStartOffset != 5 || len(f.Records) != 5 || f.Records[0].Offset != 5 {
		t.Fatalf("time topic: log start %d, %d records", f.LogStartOffset, len(f.Records))
	}
}

// A chunk whose timestamps lie far in the future does not hold back time
// retention of the chunks after it: its time counts from when it was
// written, once that is older than retention.ms.
func TestRetentionPastFutureTimestamps(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Bucket: agenttest.MinIOBucket(t), Configure: func(c *agentd.Config) {
		quiet(c)
		c.Ownership.Janitor.MergeMinChunks = 1 << 30 // retention alone
	}})
	post(t, a.URL+"/v1/topics", `{"name":"future","partitions":1,"config":{"retention.ms":1000,"message.timestamp.after.max.ms":9223372036854775807}}`)
	owning(t, a, 1)
	now := time.Now()
	produceOne(t, a.URL, "future", fmt.Sprintf(`{"value":0,"timestamp":%d}`, now.AddDate(10, 0, 0).UnixMilli()))
	for i := 1; i <= 3; i++ {
		produceOne(t, a.URL, "future", fmt.Sprintf(`{"value":%d,"timestamp":%d}`, i, now.Add(-time.Hour).UnixMilli()))
	}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		a.Owner().RunJanitor(context.Background())
		var f fetched
		get(t, a.URL+"/v1/topics/future/partitions/0/records?offset=earliest", &f)
		if f.LogStartOffset == 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log start %d 30 s after a chunk dated ten years ahead, want 4: it holds back retention", f.LogStartOffset)
		}
		<-tick.C
	}
}

// Merging 1,000 small chunks of one partition: offsets and bytes stay the
// same, the object count drops, and a read that looked up the old chunks
// before the swap still succeeds.
func TestMergeManySmallChunks(t *testing.T) {
	t.Parallel()
	bucket := agenttest.MinIOBucket(t)
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: func(c *agentd.Config) {
		quiet(c)
		c.Batcher.Linger = 0
		c.Ownership.Janitor.GCGrace = time.Hour // old objects stay for reads in flight
	}})
	post(t, a.URL+"/v1/topics", `{"name":"m","partitions":1}`)
	owning(t, a, 1)
	const n = 1000
	for i := 0; i < n; i++ { // one request per flush: 1,000 chunks in 1,000 objects
		produceOne(t, a.URL, "m", fmt.Sprintf(`{"key":"k%d","value":%d}`, i, i))
	}
	ctx := context.Background()
	top, _ := a.Store().GetTopic(ctx, "m")
	oldRefs, err := a.Store().ListBatches(ctx, top.ID, 0, 0, 100_000)
	if err != nil || len(oldRefs) != n {
		t.Fatalf("%d chunks before the merge (%v), want %d", len(oldRefs), err, n)
	}
	before := readAll(t, a.URL, "m", 0)
	objBefore, _ := countObjects(t, bucket)
	if len(before) != n {
		t.Fatalf("read %d before merge", len(before))
	}

	// Readers keep fetching while the merge runs.
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		defer close(readErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if got := readAll(t, a.URL, "m", 0); len(got) != n {
				readErr <- fmt.Errorf("read %d records during the merge, want %d", len(got), n)
				return
			}
		}
	}()
	a.Owner().RunJanitor(ctx)
	close(stop)
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	// The merged rows tile the old chunks' offsets, each covering several
	// of them; the merged bytes are the old chunks', back to back, with
	// only each batch's base offset written in.
	newRefs, _ := a.Store().ListBatches(ctx, top.ID, 0, 0, 100_000)
	if len(newRefs) == 0 || len(newRefs) >= len(oldRefs)/10 {
		t.Fatalf("merge left %d rows for %d chunks", len(newRefs), len(oldRefs))
	}
	segs := map[string]bool{}
	i := 0
	for _, nw := range newRefs {
		segs[nw.SegmentKey] = true
		if nw.SegmentKind != "merged" || nw.Batches < 2 || nw.BaseOffset != oldRefs[i].BaseOffset {
			t.Fatalf("row %+v, next old chunk %+v", nw, oldRefs[i])
		}
		merged := readRange(t, bucket, nw)
		for k := int32(0); k < nw.Batches; k, i = k+1, i+1 {
			o := oldRefs[i]
			// Old bytes are still readable (a read that looked them up
			// before the swap).
			ob := readRange(t, bucket, o)
			if len(merged) < len(ob) {
				t.Fatalf("row at %d ends inside the chunk at %d", nw.BaseOffset, o.BaseOffset)
			}
			mb := merged[:len(ob)]
			merged = merged[len(ob):]
			if h, _ := segment.ParseBatchHeader(mb); h.BaseOffset != o.BaseOffset {
				t.Fatalf("merged batch base offset %d, want %d", h.BaseOffset, o.BaseOffset)
			}
			segment.SetBaseOffset(mb, 0)
			if !bytes.Equal(ob, mb) {
				t.Fatalf("chunk at %d changed bytes in the merge", o.BaseOffset)
			}
		}
		if len(merged) != 0 || nw.LastOffset != oldRefs[i-1].LastOffset {
			t.Fatalf("row %+v: %d bytes left over, last old chunk %+v", nw, len(merged), oldRefs[i-1])
		}
	}
	if i != len(oldRefs) {
		t.Fatalf("the merged rows cover %d of %d chunks", i, len(oldRefs))
	}
	after := readAll(t, a.URL, "m", 0)
	for off, v := range before {
		if after[off] != v {
			t.Fatalf("offset %d: %q before, %q after", off, v, after[off])
		}
	}
	// Once the grace period is over the old objects go.
	a.Store().Pool().Exec(ctx, "UPDATE segments SET unreferenced_at = now() - interval '2 hours' WHERE unreferenced_at IS NOT NULL")
	a.Owner().RunJanitor(ctx)
	objAfter, _ := countObjects(t, bucket)
	t.Logf("merge: %d chunks in %d objects -> %d merged objects; bucket objects %d -> %d", len(oldRefs), objBefore, len(segs), objBefore, objAfter)
	if objAfter != len(segs) || objAfter >= objBefore/10 {
		t.Fatalf("objects %d -> %d (merged into %d)", objBefore, objAfter, len(segs))
	}
	if got := readAll(t, a.URL, "m", 0); len(got) != n {
		t.Fatalf("read %d after GC", len(got))
	}
}

func readRange(t *testing.T, b objectstore.Bucket, r metadata.BatchRef) []byte {
	t.Helper()
	rc, err := b.GetRange(context.Background(), r.SegmentKey, r.ByteOffset, int64(r.ByteLength))
	if err != nil {
		t.Fatalf("read %s: %v", r.SegmentKey, err)
	}
	defer rc.Close()
	out, _ := io.ReadAll(rc)
	return out
}

// Key compaction keeps the latest record per key with offsets preserved,
// keeps tombstones until their horizon (delete.retention.ms after the
// cleaner first saw them, not after their producer's timestamp), and
// shrinks the bucket.
func TestCompaction(t *testing.T) {
	t.Parallel()
	bucket := agenttest.MinIOBucket(t)
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: quiet})
	post(t, a.URL+"/v1/topics", `{"name":"c","partitions":1,"config":{"cleanup.policy":"compact","delete.retention.ms":60000}}`)
	owning(t, a, 1)
	want := map[string]int64{} // key -> offset that must survive
	off := int64(0)
	for round := 0; round < 5; round++ {
		var recs []string
		for k := 0; k < 10; k++ {
			recs = append(recs, fmt.Sprintf(`{"key":"k%d","value":"%s"}`, k, noise(500)))
			want[fmt.Sprintf(`"k%d"`, k)] = off
			off++
		}
		produceOne(t, a.URL, "c", strings.Join(recs, ","))
	}
	// Tombstones of k0 and k1, in chunks of their own; k0's with an old
	// producer timestamp, which does not matter.
	produceOne(t, a.URL, "c", fmt.Sprintf(`{"key":"k0","value":null,"timestamp":%d}`, time.Now().Add(-30*time.Minute).UnixMilli()))
	want[`"k0"`] = off
	produceOne(t, a.URL, "c", `{"key":"k1","value":null}`)
	want[`"k1"`] = off + 1
	produceOne(t, a.URL, "c", `{"key":"tail","value":1}`) // the newest chunk is not cleaned
	want[`"tail"`] = off + 2
	objBefore, bytesBefore := countObjects(t, bucket)
	rowsBefore := countRows(t, a.Store(), "batches")

	ctx := context.Background()
	a.Owner().RunJanitor(ctx)
	a.Owner().RunJanitor(ctx)
	check := func(want map[string]int64) map[int64]string {
		t.Helper()
		got := readAll(t, a.URL, "c", 0)
		if len(got) != len(want) {
			t.Fatalf("%d records after compaction, want %d: %v", len(got), len(want), got)
		}
		for key, o := range want {
			v, ok := got[o]
			if !ok || !strings.HasPrefix(v, key+"=") {
				t.Fatalf("key %s: offset %d holds %.40q (present %v)", key, o, v, ok)
			}
		}
		return got
	}
	got := check(want)
	objAfter, bytesAfter := countObjects(t, bucket)
	rowsAfter := countRows(t, a.Store(), "batches")
	t.Logf("compaction: objects %d -> %d, bytes %d -> %d, index rows %d -> %d", objBefore, objAfter, bytesBefore, bytesAfter, rowsBefore, rowsAfter)
	if bytesAfter >= bytesBefore {
		t.Fatal("compaction freed nothing")
	}
	// A second pass with nothing new changes nothing.
	a.Owner().RunJanitor(ctx)
	if again := readAll(t, a.URL, "c", 0); len(again) != len(got) {
		t.Fatalf("second pass changed %d -> %d records", len(got), len(again))
	}
	// Both tombstones got a horizon when the cleaner first saw them; once
	// k0's passes, a pass drops it (a new record makes the partition dirty).
	if n := countRowsWhere(t, a.Store(), "batches", "delete_horizon > 0"); n != 2 {
		t.Fatalf("%d chunks with a tombstone horizon, want 2", n)
	}
	if _, err := a.Store().Pool().Exec(ctx, `UPDATE batches SET delete_horizon = 1 WHERE base_offset = $1`, want[`"k0"`]); err != nil {
		t.Fatal(err)
	}
	produceOne(t, a.URL, "c", `{"key":"tail2","value":2}`)
	want[`"tail2"`] = off + 3
	delete(want, `"k0"`)
	a.Owner().RunJanitor(ctx)
	check(want)
}

// A partition with more keys than one pass's map holds is compacted over
// several passes, each within the map's bound.
func TestCompactionInBoundedPasses(t *testing.T) {
	t.Parallel()
	bucket := agenttest.MinIOBucket(t)
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: func(c *agentd.Config) {
		quiet(c)
		c.Ownership.Janitor.CompactMapBytes = 4 << 10 // about 70 keys
	}})
	post(t, a.URL+"/v1/topics", `{"name":"c","partitions":1,"config":{"cleanup.policy":"compact"}}`)
	owning(t, a, 1)
	const keys, rounds = 300, 4
	want := map[string]int64{}
	off := int64(0)
	for round := 0; round < rounds; round++ {
		for k0 := 0; k0 < keys; k0 += 50 {
			var recs []string
			for k := k0; k < k0+50; k++ {
				recs = append(recs, fmt.Sprintf(`{"key":"key-%04d","value":"r%d"}`, k, round))
				want[fmt.Sprintf(`"key-%04d"`, k)] = off
				off++
			}
			produceOne(t, a.URL, "c", strings.Join(recs, ","))
		}
	}
	produceOne(t, a.URL, "c", `{"key":"tail","value":1}`)
	want[`"tail"`] = off
	ctx := context.Background()
	passes := 0
	waitUntil(t, "compacted to one record per key", func() bool {
		a.Owner().RunJanitor(ctx)
		passes++
		if m := gaugeValue(t, a, "silt_janitor_compact_map_bytes"); m > 4<<10 {
			t.Fatalf("a pass mapped %v bytes of keys, over its bound", m)
		}
		return len(readAll(t, a.URL, "c", 0)) == len(want)
	})
	got := readAll(t, a.URL, "c", 0)
	for key, o := range want {
		if v, ok := got[o]; !ok || !strings.HasPrefix(v, key+"=") {
			t.Fatalf("key %s: offset %d holds %.40q (present %v)", key, o, v, ok)
		}
	}
	t.Logf("%d records of %d keys compacted in %d passes", off+1, keys+1, passes)
	if passes < 2 {
		t.Fatalf("compacted in %d pass; the map bound did not apply", passes)
	}
}

func gaugeValue(t *testing.T, a *agenttest.Agent, name string) float64 {
	t.Helper()
	mfs, err := a.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// Orphans of failed flushes (objects without a segment row) are deleted
// once old enough; committed objects are not.
func TestOrphanSweep(t *testing.T) {
	t.Parallel()
	bucket := agenttest.MinIOBucket(t)
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: func(c *agentd.Config) {
		quiet(c)
		c.Ownership.Janitor.OrphanAge = ownership.MinOrphanAge
	}})
	post(t, a.URL+"/v1/topics", `{"name":"o","partitions":1}`)
	owning(t, a, 1)
	produceOne(t, a.URL, "o", `{"value":1}`)
	ctx := context.Background()
	if err := bucket.Put(ctx, "segments/2020/01/01/orphan.seg", strings.NewReader("junk"), 4, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "orphan deleted", func() bool {
		a.Owner().RunJanitor(ctx)
		_, err := bucket.Stat(ctx, "segments/2020/01/01/orphan.seg")
		return errors.Is(err, objectstore.ErrNotExist)
	})
	if got := readAll(t, a.URL, "o", 0); len(got) != 1 {
		t.Fatalf("committed record lost: %v", got)
	}
}

// Garbage collection during an object-store outage leaks nothing: the
// rows of objects it could not delete stay, and a later pass deletes them.
func TestGCDuringOutageLeaksNothing(t *testing.T) {
	t.Parallel()
	bucket := agenttest.MinIOBucket(t)
	faulty := objectstoretest.NewFaulty(bucket)
	a := agenttest.Start(t, agenttest.Options{Bucket: faulty, Configure: func(c *agentd.Config) {
		quiet(c)
		c.Ownership.Janitor.MergeMinChunks = 1 << 30 // retention alone
	}})
	post(t, a.URL+"/v1/topics", `{"name":"g","partitions":1,"config":{"retention.bytes":5000}}`)
	owning(t, a, 1)
	for i := range 10 {
		produceOne(t, a.URL, "g", fmt.Sprintf(`{"value":"%s%d"}`, noise(2000), i))
	}
	ctx := context.Background()
	objBefore, _ := countObjects(t, bucket)
	faulty.FailAlways(objectstoretest.OpDelete, errors.New("injected: object store down"))
	a.Owner().RunJanitor(ctx) // retention; GC fails every delete
	a.Owner().RunJanitor(ctx)
	if n, _ := countObjects(t, bucket); n != objBefore {
		t.Fatalf("objects %d -> %d with every delete failing", objBefore, n)
	}
	doomed := countRowsWhere(t, a.Store(), "segments", "state IN ('unreferenced', 'deleting')")
	if doomed == 0 {
		t.Fatal("retention left no object to delete")
	}
	faulty.Reset()
	// The claims of the failed pass lapse; a later pass deletes them all.
	a.Store().Pool().Exec(ctx, "UPDATE segments SET deadline = now() - interval '1 second' WHERE state = 'deleting'")
	a.Owner().RunJanitor(ctx)
	objAfter, _ := countObjects(t, bucket)
	live := countRowsWhere(t, a.Store(), "segments", "true")
	t.Logf("outage: %d objects, %d doomed during the outage; after it %d objects, %d segment rows", objBefore, doomed, objAfter, live)
	if objAfter != objBefore-doomed || live != objAfter {
		t.Fatalf("after the outage: %d objects, %d rows; want %d of both", objAfter, live, objBefore-doomed)
	}
}

func countRowsWhere(t *testing.T, s *metadata.Store, table, where string) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+table+" WHERE "+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A partition of more chunks than a pass reads (100,000) merges, over
// several passes, all of it.
func TestMergeBeyondOnePass(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: quiet}) // in-memory bucket
	post(t, a.URL+"/v1/topics", `{"name":"big","partitions":1}`)
	owning(t, a, 1)
	topic, err := a.Store().GetTopic(context.Background(), "big")
	if err != nil {
		t.Fatal(err)
	}
	// One object of 120,000 one-record chunks, indexed as a flush would.
	const n = 120_000
	b := segment.NewBuilder(segment.NewEncoder())
	key := segment.ChunkKey{TopicID: topic.ID, Partition: 0}
	for i := range n {
		rec := []segment.Record{{Value: []byte(fmt.Sprint(i)), Timestamp: time.Now().UnixMilli()}}
		if _, err := b.Add(key, rec, segment.BatchOptions{Compression: segment.CompressionNone}); err != nil {
			t.Fatal(err)
		}
	}
	obj, refs, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	segKey := "segments/2020/01/01/big.seg"
	id, err := a.Store().RegisterSegment(ctx, segKey, int64(len(obj)), metadata.KindFlush, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Bucket().Put(ctx, segKey, bytes.NewReader(obj), int64(len(obj)), objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	f := metadata.Flush{SegmentID: id, SegmentSize: int64(len(obj)), Chunks: make([]metadata.Chunk, n)}
	for i, r := range refs {
		f.Chunks[i] = metadata.Chunk{TopicID: topic.ID, ByteOffset: r.Offset, ByteLength: int32(r.Length), Records: r.Records, LastOffsetDelta: r.LastOffsetDelta, MaxTimestamp: r.MaxTimestamp}
	}
	if _, err := a.Store().CommitFlush(ctx, f); err != nil {
		t.Fatal(err)
	}
	passes := 0
	for left := n; left > 0; passes++ {
		if passes == 10 {
			t.Fatalf("%d flush chunks left after %d passes", left, passes)
		}
		a.Owner().RunJanitor(ctx)
		left = countRowsWhere(t, a.Store(), "batches b JOIN segments s ON s.id = b.segment_id", "s.kind = 'flush'")
	}
	t.Logf("%d chunks merged in %d passes into %d segments, %d index rows", n, passes,
		countRowsWhere(t, a.Store(), "segments", "kind = 'merged' AND state = 'live'"), countRows(t, a.Store(), "batches"))
	got := readAll(t, a.URL, "big", n-5)
	if len(got) != 5 || got[n-1] != fmt.Sprint("=", n-1) {
		t.Fatalf("the last records after the merge: %v", got)
	}
}

// A topic whose small chunks were merged into rows of several batches and
// that becomes compacted later is compacted correctly.
func TestCompactionOfMergedRows(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		quiet(c)
		c.Batcher.Linger = 0
	}})
	post(t, a.URL+"/v1/topics", `{"name":"mc","partitions":1}`)
	owning(t, a, 1)
	want := map[string]int64{}
	for i := range 40 { // 40 flushes over 10 keys
		produceOne(t, a.URL, "mc", fmt.Sprintf(`{"key":"k%d","value":%d}`, i%10, i))
		want[fmt.Sprintf(`"k%d"`, i%10)] = int64(i)
	}
	ctx := context.Background()
	a.Owner().RunJanitor(ctx) // merges
	if n := countRowsWhere(t, a.Store(), "batches", "batch_count > 1"); n == 0 {
		t.Fatal("the merge wrote no rows of several batches")
	}
	req, _ := http.NewRequest(http.MethodPatch, a.URL+"/v1/topics/mc", strings.NewReader(`{"config":{"cleanup.policy":"compact"}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("alter: %v %v", resp, err)
	}
	resp.Body.Close()
	produceOne(t, a.URL, "mc", `{"key":"tail","value":1}`)
	want[`"tail"`] = 40
	a.Owner().RunJanitor(ctx)
	got := readAll(t, a.URL, "mc", 0)
	if len(got) != len(want) {
		t.Fatalf("%d records after compaction, want %d: %v", len(got), len(want), got)
	}
	for key, o := range want {
		if v, ok := got[o]; !ok || !strings.HasPrefix(v, key+"=") {
			t.Fatalf("key %s: offset %d holds %q (present %v)", key, o, v, ok)
		}
	}
}

// A quiet partition merged a minute at a time: its merged rows are merged
// again with the rows after them (size-tiered), so that its rows grow
// rather than stay a minute of data each; reads are unchanged.
func TestQuietPartitionRowsGrow(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		quiet(c)
		c.Batcher.Linger = 0
	}})
	post(t, a.URL+"/v1/topics", `{"name":"q","partitions":1}`)
	owning(t, a, 1)
	ctx := context.Background()
	top, err := a.Store().GetTopic(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	const rounds, perRound = 8, 8
	for r := 0; r < rounds; r++ {
		for i := 0; i < perRound; i++ { // one chunk per request
			n := r*perRound + i
			produceOne(t, a.URL, "q", fmt.Sprintf(`{"key":"k%d","value":%d}`, n, n))
		}
		a.Owner().RunJanitor(ctx) // a merge pass after each "minute"
	}
	refs, err := a.Store().ListBatches(ctx, top.ID, 0, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	batches := int32(0)
	for _, r := range refs {
		batches += r.Batches
	}
	// Merged once per round only, 8 rows of 8 batches would stay; merged
	// in tiers, the 64 batches end in a row or two.
	if len(refs) > 2 || batches != rounds*perRound {
		t.Fatalf("%d rows covering %d batches after %d rounds: %+v", len(refs), batches, rounds, refs)
	}
	got := readAll(t, a.URL, "q", 0)
	for n := 0; n < rounds*perRound; n++ {
		if want := fmt.Sprintf(`"k%d"=%d`, n, n); got[int64(n)] != want {
			t.Fatalf("offset %d: %q, want %q", n, got[int64(n)], want)
		}
	}
}

// An agent's heartbeats and lease rounds go on while its own janitor is
// blocked, inside a merge's swap or retention's fence, on a partition row
// that another session holds (as a stalled agent's commit would), with no
// lock or statement bound to end the wait. The hold outlasts the lease the
// agent had when it blocked, and the agent still owns the partition at the
// same epoch afterwards: the blocked call then completes.
func TestOwnershipLoopsOutliveBlockedJanitor(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		config, fn string
		minChunks  int
		done       func(t *testing.T, a *agenttest.Agent) bool
	}{
		"merge swap": {
			config: `{}`, fn: "silt_swap_batches", minChunks: 2,
			done: func(t *testing.T, a *agenttest.Agent) bool {
				return countRowsWhere(t, a.Store(), "segments", "kind = 'merged' AND state = 'live'") > 0
			},
		},
		"retention fence": {
			config: `{"retention.ms":60000}`, fn: "silt_advance_log_start", minChunks: 1 << 30,
			done: func(t *testing.T, a *agenttest.Agent) bool {
				var f fetched
				get(t, a.URL+"/v1/topics/held/partitions/0/records?offset=earliest", &f)
				return f.LogStartOffset == 4
			},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := agenttest.Start(t, agenttest.Options{Configure: func(cfg *agentd.Config) {
				quiet(cfg)
				cfg.Ownership.Janitor.MergeMinChunks = c.minChunks
				// Nothing ends the janitor's wait but the release.
				cfg.DBSession.LockTimeout, cfg.DBSession.StatementTimeout = 0, 0
			}})
			post(t, a.URL+"/v1/topics", `{"name":"held","partitions":1,"config":`+c.config+`}`)
			owning(t, a, 1)
			before := a.Owner().Leases()[0]
			old := time.Now().Add(-time.Hour).UnixMilli()
			for i := range 4 { // four flushes: four small chunks, an hour old
				produceOne(t, a.URL, "held", fmt.Sprintf(`{"value":%d,"timestamp":%d}`, i, old))
			}

			ctx := context.Background()
			watch, holder := pgConn(t, a.DatabaseURL), pgConn(t, a.DatabaseURL)
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `SELECT 1 FROM partitions FOR UPDATE`); err != nil {
				t.Fatal(err)
			}
			janitorDone := make(chan struct{})
			go func() {
				defer close(janitorDone)
				a.Owner().RunJanitor(ctx)
			}()
			blocked := func() bool {
				var n int
				if err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, c.fn).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n > 0
			}
			waitUntil(t, "the janitor blocked in "+c.fn, blocked)
			// The lease the agent held when it blocked, on Postgres's clock.
			var firstEnd, beat time.Time
			if err := watch.QueryRow(ctx, `SELECT (SELECT expires_at FROM agent_leases), (SELECT heartbeat_at FROM agents)`).Scan(&firstEnd, &beat); err != nil {
				t.Fatal(err)
			}
			leaseEnd, beats, renewals := firstEnd, 0, 0
			waitUntil(t, "heartbeats and lease rounds past the lease held at the block", func() bool {
				var lease, hb time.Time
				var lapsed bool
				if err := watch.QueryRow(ctx, `SELECT (SELECT expires_at FROM agent_leases), (SELECT heartbeat_at FROM agents), now() > $1`, firstEnd).Scan(&lease, &hb, &lapsed); err != nil {
					t.Fatal(err)
				}
				if hb.After(beat) {
					beats, beat = beats+1, hb
				}
				if lease.After(leaseEnd) {
					renewals, leaseEnd = renewals+1, lease
				}
				// Done once the first lease would have lapsed without a
				// renewal, after several of each.
				return lapsed && beats >= 3 && renewals >= 3
			})
			if !blocked() {
				t.Fatal("the janitor was no longer blocked: the test proved nothing")
			}
			select {
			case <-janitorDone:
				t.Fatal("the janitor pass ended while its call was blocked")
			default:
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			<-janitorDone
			if after := a.Owner().Leases(); len(after) != 1 || after[0] != before {
				t.Fatalf("leases %+v after the block, want %+v: the lease lapsed", after, before)
			}
			if !c.done(t, a) {
				t.Fatalf("the blocked %s did not complete once the row was released", name)
			}
		})
	}
}

// pgConn opens a connection of the test's own.
func pgConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(ctx) })
	return conn
}
