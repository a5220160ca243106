package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"silt/agent"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/objectstore/objectstoretest"
	"silt/problem"
	"silt/recordjson"
)

// labeledCounter reads counter name{label="value"} from a registry.
func labeledCounter(t *testing.T, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

// produceValue produces one JSON value to a partition and returns the
// answer as it came.
func produceValue(t *testing.T, a *agenttest.Agent, topic string, partition int32, value string) (int, http.Header, []byte) {
	t.Helper()
	req := agent.ProduceRequest{Records: []recordjson.Record{{Partition: i32p(partition), Value: json.RawMessage(value)}}}
	return call(t, "POST", a.URL+"/v1/topics/"+topic+"/records", "application/json", jsonBody(t, req))
}

// wantOffset checks a produce answer: 200 with the record at offset want.
func wantOffset(t *testing.T, status int, body []byte, want int64) {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("produce: %d %s", status, body)
	}
	var resp agent.ProduceResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if got := resp.Offsets[0].Offset; got != want {
		t.Fatalf("produced at offset %d, want %d", got, want)
	}
}

// readyz answers GET /readyz.
func readyz(t *testing.T, a *agenttest.Agent) (int, http.Header, []byte) {
	t.Helper()
	return call(t, "GET", a.URL+"/readyz", "", nil)
}

// /readyz reflects whether the agent can complete a flush, not only
// whether its dependencies answer a ping: while every PUT fails (the
// object store answers Stat, so its own check passes), it turns 503 once
// flushes have failed for --unready-after, naming the flush check and no
// object key or host; when PUTs work again it recovers by itself, through
// a probe flush, with no produce traffic (a load balancer sends none to
// an unready agent).
func TestReadyzFollowsFlushes(t *testing.T) {
	t.Parallel()
	faulty := objectstoretest.NewFaulty(agenttest.MinIOBucket(t))
	a := agenttest.Start(t, agenttest.Options{Bucket: faulty, Configure: func(c *agentd.Config) {
		c.Batcher.UnreadyAfter = 300 * time.Millisecond
	}})
	createTopic(t, a, "t", 1, "")
	status, _, b := produceValue(t, a, "t", 0, `0`)
	wantOffset(t, status, b, 0)
	status, _, b = readyz(t, a)
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(b, &ready); status != http.StatusOK || err != nil || ready.Checks["flush"] != "ok" || ready.Checks["objectstore"] != "ok" {
		t.Fatalf("readyz while healthy: %d %s (%v)", status, b, err)
	}

	faulty.FailAlways(objectstoretest.OpPut, errors.New("dial tcp 127.0.0.1:9000: connect: connection refused"))
	status, hdr, b := produceValue(t, a, "t", 0, `1`)
	wantProblem(t, status, hdr, b, http.StatusServiceUnavailable, problem.CodeUnavailable)
	// Flushes keep failing, as they would under traffic, until the agent
	// turns unready.
	var rstatus int
	var rhdr http.Header
	var rbody []byte
	waitUntil(t, func() bool {
		if status, _, b := produceValue(t, a, "t", 0, `1`); status != http.StatusServiceUnavailable {
			t.Fatalf("produce while PUTs fail: %d %s", status, b)
		}
		rstatus, rhdr, rbody = readyz(t, a)
		return rstatus != http.StatusOK
	})
	p := wantProblem(t, rstatus, rhdr, rbody, http.StatusServiceUnavailable, problem.CodeUnavailable)
	if !strings.Contains(p.Detail, "flush") || strings.Contains(p.Detail, "objectstore") || strings.Contains(p.Detail, "postgres") {
		t.Fatalf("readyz detail %q: want the flush check alone", p.Detail)
	}
	if strings.Contains(string(rbody), "segments/") || strings.Contains(string(rbody), "9000") {
		t.Fatalf("readyz body names an object key or a host: %s", rbody)
	}

	// The store recovers; nobody produces. The agent probes with a flush
	// of its own and is ready again.
	puts := faulty.Calls(objectstoretest.OpPut)
	faulty.Reset()
	waitUntil(t, func() bool {
		status, _, _ := readyz(t, a)
		return status == http.StatusOK
	})
	if faulty.Calls(objectstoretest.OpPut) <= puts {
		t.Fatal("ready again without a PUT: readiness did not check a flush")
	}
	// The failed flushes used no offsets.
	status, _, b = produceValue(t, a, "t", 0, `2`)
	wantOffset(t, status, b, 1)
}

// lockPartitionRow holds a partition's row lock from a session of the
// test's own, as a stalled agent inside a commit would, until release.
func lockPartitionRow(t *testing.T, dbURL, topic string, partition int32) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM partitions p JOIN topics t ON t.id = p.topic_id
		WHERE t.name = $1 AND p.partition = $2 FOR UPDATE OF p`, topic, partition); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			_ = tx.Rollback(ctx)
			_ = conn.Close(ctx)
		}
	}
	t.Cleanup(release)
	return release
}

// waitLockWaiter waits until a session of the database (the agent's)
// waits on a lock in a statement containing fn.
func waitLockWaiter(t *testing.T, dbURL, fn string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitUntil(t, func() bool {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, fn).Scan(&n)
		return err == nil && n > 0
	})
}

// A commit that Postgres ends on a session bound (lock_timeout, or
// statement_timeout with no lock bound) while another session holds its
// partition's row fails its own producers with a retriable 503 and
// nothing else: the flush queued behind it commits as soon as it failed,
// later flushes commit while the row is still held, and the failed
// records used no offset.
func TestCommitTimeoutFailsOnlyItsFlush(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		kind    string
		session func(c *agentd.Config)
	}{
		"lock timeout": {"lock", func(c *agentd.Config) { c.DBSession.LockTimeout = time.Second }},
		"statement timeout": {"statement", func(c *agentd.Config) {
			c.DBSession.LockTimeout, c.DBSession.StatementTimeout = 0, 2*time.Second
		}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := agenttest.Start(t, agenttest.Options{Configure: c.session})
			createTopic(t, a, "t", 2, "")
			for p := range int32(2) {
				status, _, b := produceValue(t, a, "t", p, `"warm"`)
				wantOffset(t, status, b, 0)
			}
			timeouts := labeledCounter(t, a.Metrics(), "silt_metadata_timeouts_total", "kind", c.kind)

			release := lockPartitionRow(t, a.DatabaseURL, "t", 0)
			type answer struct {
				status int
				hdr    http.Header
				body   []byte
			}
			blocked := make(chan answer, 1)
			go func() {
				status, hdr, b := produceValue(t, a, "t", 0, `"blocked"`)
				blocked <- answer{status, hdr, b}
			}()
			waitLockWaiter(t, a.DatabaseURL, "silt_commit_flush")
			// A later flush, to the other partition: it commits after the
			// blocked one, in flush order, once that one failed.
			queued := make(chan answer, 1)
			go func() {
				status, hdr, b := produceValue(t, a, "t", 1, `"queued"`)
				queued <- answer{status, hdr, b}
			}()
			r := <-blocked
			wantProblem(t, r.status, r.hdr, r.body, http.StatusServiceUnavailable, problem.CodeUnavailable)
			if got := labeledCounter(t, a.Metrics(), "silt_metadata_timeouts_total", "kind", c.kind); got <= timeouts {
				t.Fatalf("no %s timeout counted: the commit did not end on its session bound", c.kind)
			}
			r = <-queued
			wantOffset(t, r.status, r.body, 1)
			// The row is still held: flushes of other partitions go on.
			for i := range 3 {
				status, _, b := produceValue(t, a, "t", 1, `"more"`)
				wantOffset(t, status, b, int64(2+i))
			}
			release()
			status, _, b := produceValue(t, a, "t", 0, `"after"`)
			wantOffset(t, status, b, 1)
		})
	}
}
