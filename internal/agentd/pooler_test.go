package agentd_test

import (
	"context"
	"testing"
	"time"

	"silt/client"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/internal/testenv"
	"silt/metadata/metadatatest"
	"silt/objectstore/mem"
)

// Agents whose database URL leads to pgbouncer in transaction mode work
// when given a direct URL: they start (migrations on the direct URL),
// produce through the pooler, and a long-poll on one agent is woken by a
// commit of another, over the LISTEN connection on the direct URL.
func TestBehindTransactionPooler(t *testing.T) {
	t.Parallel()
	direct := metadatatest.URL(t)
	pooled := testenv.PgBouncer(t, direct, 4)
	b, err := mem.New(context.Background(), mem.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	opts := agenttest.Options{DatabaseURL: direct, Bucket: b, Configure: func(c *agentd.Config) {
		c.DatabaseURL, c.DatabaseDirectURL = pooled, direct
	}}
	reader, writer := agenttest.Start(t, opts), agenttest.Start(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := client.New(reader.URL)
	if err != nil {
		t.Fatal(err)
	}
	wc, err := client.New(writer.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wc.CreateTopic(ctx, client.NewTopic{Name: "pooled", Partitions: 1}); err != nil {
		t.Fatal(err)
	}

	type result struct {
		res client.FetchResult
		err error
	}
	got := make(chan result, 1)
	go func() {
		res, err := rc.Fetch(ctx, "pooled", 0, 0, client.FetchOptions{Wait: 30 * time.Second})
		got <- result{res, err}
	}()
	// Produce only once the fetch is parked, so that only a notification
	// can wake it (it does not poll).
	waitCounter(t, reader, "silt_fetch_waits_total", 1)
	if _, err := wc.Produce(ctx, "pooled", []client.Message{{Value: []byte("through the pooler")}}); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || len(r.res.Records) != 1 || string(r.res.Records[0].Value) != "through the pooler" {
		t.Fatalf("long-poll on the other agent: %+v, %v; want the record, woken by the commit's notification", r.res, r.err)
	}
}

// waitCounter waits until the agent's counter name reaches at least n.
func waitCounter(t *testing.T, a *agenttest.Agent, name string, n float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		mfs, err := a.Metrics().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name && len(mf.GetMetric()) > 0 && mf.GetMetric()[0].GetCounter().GetValue() >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed below %v", name, n)
		}
		<-tick.C
	}
}
