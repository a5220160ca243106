package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"

	"silt/client"
)

// janitorEnv makes the janitor fast: the smallest orphan age, sweeps and
// merges several times a second, short rewrite deadlines.
var janitorEnv = []string{
	"SILT_ORPHAN_AGE=1s",
	"SILT_ORPHAN_INTERVAL=200ms",
	"SILT_GC_INTERVAL=200ms",
	"SILT_GC_GRACE=1s",
	"SILT_MERGE_INTERVAL=200ms",
	"SILT_REWRITE_TIMEOUT=2s",
}

// dbConn opens a connection of the test's own to the cluster's database.
func (c *cluster) dbConn(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// count runs a count(*) query on conn.
func count(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// objectsUnder counts the cluster bucket's objects under prefix.
func (c *cluster) objectsUnder(t *testing.T, prefix string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	for o := range c.srv.Client(t).ListObjects(ctx, c.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		n++
	}
	return n
}

// checkIndexIntact fails the test when an index row points at an object
// that is not in the bucket.
func (c *cluster) checkIndexIntact(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT DISTINCT s.key FROM batches b JOIN segments s ON s.id = b.segment_id`)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	mc := c.srv.Client(t)
	for _, k := range keys {
		if _, err := mc.StatObject(ctx, c.bucket, k, minio.StatObjectOptions{}); err != nil {
			t.Errorf("index row points at %s: %v", k, err)
		}
	}
}

// checkReadable fails the test unless every agent serves partition 0 of
// topic with exactly want (value by offset).
func (c *cluster) checkReadable(t *testing.T, topic string, want map[int64]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, u := range c.live() {
		cl, err := client.New(u)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := readPartition(ctx, cl, topic, 0)
		if err != nil {
			t.Fatalf("read through %s: %v", u, err)
		}
		got := map[int64]string{}
		for _, r := range recs {
			got[r.Offset] = string(r.Value)
		}
		for off, v := range want {
			if got[off] != v {
				t.Errorf("through %s: offset %d is %q, acknowledged as %q", u, off, got[off], v)
			}
		}
	}
}

// produceAt0 produces one record to partition 0 through url and returns
// its offset.
func produceAt0(ctx context.Context, url, topic, value string) (int64, error) {
	cl, err := client.New(url)
	if err != nil {
		return 0, err
	}
	res, err := cl.Produce(ctx, topic, []client.Message{{Partition: client.Partition(0), Value: []byte(value)}})
	if err != nil {
		return 0, err
	}
	return res.Offsets[0].Offset, nil
}

// withParams adds query parameters (Postgres run-time settings, for pgx)
// to a database URL.
func withParams(t *testing.T, db string, params ...string) string {
	t.Helper()
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// waitBlocked waits until a session of the named agent runs a statement
// containing fn and waits on a lock.
func waitBlocked(t *testing.T, conn *pgx.Conn, agentID, fn string) {
	t.Helper()
	defer func() {
		if t.Failed() {
			rows, _ := conn.Query(context.Background(), `SELECT application_name, state, coalesce(wait_event_type, ''), left(query, 120) FROM pg_stat_activity WHERE datname = current_database()`)
			for rows.Next() {
				var a, b, c, d string
				_ = rows.Scan(&a, &b, &c, &d)
				t.Logf("activity: %s | %s | %s | %s", a, b, c, d)
			}
			rows.Close()
		}
	}()
	waitFor(t, agentID+" blocked in "+fn, 60*time.Second, func() bool {
		return count(t, conn, `
			SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE '%' || $2 || '%'`,
			"silt agent "+agentID, fn) > 0
	})
}

// Finding 1 of the janitor review: a merge whose swap waits on a lock for
// longer than the orphan age must not index an object that the sweep
// deleted meanwhile. A session holds the partition's row lock (as a
// stalled agent mid-commit would) while the owner merges and the sweeps
// run, for longer than the orphan age and the rewrite deadline; afterwards
// every acknowledged record reads back through every agent and no index
// row points at a missing object.
func TestDelayedSwapLosesNothing(t *testing.T) {
	t.Parallel()
	c := newCluster(t, append(janitorEnv, "SILT_MERGE_MIN_AGE=5s")...)
	a1, a2 := c.start("a1"), c.start("a2")
	topic := "swap"
	if _, err := request("POST", a1.URL+"/v1/topics", map[string]any{"name": topic, "partitions": 1}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[int64]string{}
	for i := range 12 { // twelve flushes: twelve small chunks to merge
		v := fmt.Sprint("v", i)
		off, err := produceAt0(ctx, []string{a1.URL, a2.URL}[i%2], topic, v)
		if err != nil {
			t.Fatal(err)
		}
		want[off] = v
	}
	// conn observes; holder holds locks (statistics views are frozen for
	// the length of a transaction, so they are read from another session).
	conn, holder := c.dbConn(t), c.dbConn(t)
	if n := count(t, conn, `SELECT count(*) FROM segments WHERE kind = 'merged'`); n != 0 {
		t.Fatalf("%d merged segments before the chunks were old enough", n)
	}
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM partitions FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	held := time.Now()
	owner := ""
	waitFor(t, "a swap blocked", 60*time.Second, func() bool {
		for _, id := range []string{"a1", "a2"} {
			if count(t, conn, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1
				AND wait_event_type = 'Lock' AND query LIKE '%silt_swap_batches%'`, "silt agent "+id) > 0 {
				owner = id
				return true
			}
		}
		return false
	})
	var blocked int64
	if err := conn.QueryRow(ctx, `SELECT min(id) FROM segments WHERE kind = 'merged' AND state = 'pending'`).Scan(&blocked); err != nil {
		t.Fatal(err)
	}
	// Keep holding past the orphan age and the rewrite deadline, until the
	// janitor has given the blocked rewrite up and deleted its object.
	waitFor(t, "the blocked rewrite's object deleted", 60*time.Second, func() bool {
		return count(t, conn, `SELECT count(*) FROM segments WHERE id = $1`, blocked) == 0
	})
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("swap of %s blocked for %v", owner, time.Since(held).Round(time.Millisecond))
	// The janitor merges once the lock is gone.
	waitFor(t, "the merge done after the lock went", 60*time.Second, func() bool {
		return count(t, conn, `SELECT count(*) FROM segments WHERE kind = 'merged' AND state = 'live'`) > 0
	})
	c.checkIndexIntact(t, conn)
	c.checkReadable(t, topic, want)
}

// The flush commit's form of finding 1: an agent frozen (SIGSTOP) inside
// its commit for longer than its flush deadline and the sweeps must not
// index an object the janitor deleted meanwhile. Its request fails, the
// other agent's acknowledged records all read back, and no index row
// points at a missing object.
func TestStoppedCommitLosesNothing(t *testing.T) {
	t.Parallel()
	// The commit must wait in Postgres past its flush deadline, as one of
	// a frozen agent would: its session bounds are above the flush
	// timeout, which the flags refuse, so they are set in the database
	// URL, which wins.
	c := newCluster(t, append(janitorEnv, "SILT_FLUSH_TIMEOUT=1s", "SILT_DB_LOCK_TIMEOUT=0", "SILT_DB_STATEMENT_TIMEOUT=0", "SILT_DB_IDLE_IN_TRANSACTION_TIMEOUT=0")...)
	db := "SILT_DATABASE_URL=" + withParams(t, c.db, "lock_timeout=60s", "statement_timeout=120s", "idle_in_transaction_session_timeout=5s")
	a1, a2 := c.start("a1", db), c.start("a2", db)
	topic := "stopped"
	if _, err := request("POST", a1.URL+"/v1/topics", map[string]any{"name": topic, "partitions": 1}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[int64]string{}
	for i := range 4 {
		v := fmt.Sprint("before", i)
		off, err := produceAt0(ctx, a2.URL, topic, v)
		if err != nil {
			t.Fatal(err)
		}
		want[off] = v
	}
	conn, holder := c.dbConn(t), c.dbConn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM partitions FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	// a1's produce reaches its commit and waits there on the lock.
	type outcome struct {
		off int64
		err error
	}
	stopped := make(chan outcome, 1)
	go func() {
		off, err := produceAt0(ctx, a1.URL, topic, "frozen")
		stopped <- outcome{off, err}
	}()
	waitBlocked(t, conn, "a1", "silt_commit_flush")
	var segID int64
	if err := conn.QueryRow(ctx, `SELECT id FROM segments WHERE state = 'pending' AND kind = 'flush'`).Scan(&segID); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(a1.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	defer func() {
		if !continued {
			_ = syscall.Kill(a1.PID(), syscall.SIGCONT)
		}
	}()
	// a2's janitor deletes the stalled flush's object once its deadline
	// passed on Postgres's clock.
	waitFor(t, "the stalled flush's segment swept", 60*time.Second, func() bool {
		return count(t, conn, `SELECT count(*) FROM segments WHERE id = $1`, segID) == 0
	})
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// The frozen commit now runs on in Postgres and must write nothing.
	waitFor(t, "the frozen commit ended", 60*time.Second, func() bool {
		return count(t, conn, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'silt agent a1' AND query LIKE '%silt_commit_flush%' AND state = 'active'`) == 0
	})
	if err := syscall.Kill(a1.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	continued = true
	o := <-stopped
	if o.err == nil {
		t.Fatalf("the stalled flush was acknowledged at offset %d after its object was deleted", o.off)
	}
	var pe *client.Error
	if !errors.As(o.err, &pe) || pe.Status != http.StatusServiceUnavailable {
		t.Fatalf("the stalled flush failed with %v, want a retriable 503", o.err)
	}
	if n := count(t, conn, `SELECT count(*) FROM batches b JOIN segments s ON s.id = b.segment_id WHERE s.id = $1`, segID); n != 0 {
		t.Fatalf("%d index rows for the swept segment", n)
	}
	for i := range 4 {
		v := fmt.Sprint("after", i)
		off, err := produceAt0(ctx, []string{a1.URL, a2.URL}[i%2], topic, v)
		if err != nil {
			t.Fatal(err)
		}
		want[off] = v
	}
	c.checkIndexIntact(t, conn)
	c.checkReadable(t, topic, want)
}
