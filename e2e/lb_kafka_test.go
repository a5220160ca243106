package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"silt/client"
	kc "silt/internal/kafkaclients"
	"silt/localstack"
)

// lbKafka is the cluster's Kafka address, through the load balancer, with
// the admin key (SASL PLAIN: keys are required).
func lbKafka(c *localstack.Cluster) kc.Broker { return kc.Plain(c.KafkaAddr).WithKey(c.AdminKey) }

// kafkaClient is a franz-go client of b, closed when the test ends.
func kafkaClient(t *testing.T, b kc.Broker, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(b.Addr), kgo.RetryTimeout(30 * time.Second)}
	if b.User != "" {
		base = append(base, kgo.SASL(plain.Auth{User: b.User, Pass: b.Password}.AsMechanism()))
	}
	if b.CAFile != "" {
		cfg, err := client.TLSConfig(b.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		base = append(base, kgo.DialTLSConfig(cfg))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// kafkaAdmin is a franz-go admin client of the cluster's Kafka address.
func kafkaAdmin(t *testing.T, c *localstack.Cluster) *kadm.Client {
	t.Helper()
	return kadm.NewClient(kafkaClient(t, lbKafka(c)))
}

func kafkaTopic(t *testing.T, adm *kadm.Client, name string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := adm.CreateTopics(ctx, partitions, -1, nil, name)
	if err != nil || res[name].Err != nil {
		t.Fatalf("create %s: %v %v", name, err, res[name].Err)
	}
}

// Kafka clients through HAProxy in front of three agents: every agent
// advertises the load balancer as the one broker, so each request may
// reach any agent. The real clients round-trip their records (checked
// against the HTTP API through the load balancer too); then a kcat
// produce loop runs while one agent is killed with SIGKILL, and no record
// that kcat had acknowledged is lost.
func TestLBKafkaClientsAndKill(t *testing.T) {
	c := startLBCluster(t, 3)
	adm := kafkaAdmin(t, c)

	t.Run("clients", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			produce func(topic string, sent []kc.Record) []kc.Record
			consume func(topic string, n int) []kc.Record
		}{
			{"confluent-kafka", func(topic string, sent []kc.Record) []kc.Record {
				return kc.ConfluentProduce(t, lbKafka(c), topic, "zstd", true, sent)
			}, func(topic string, n int) []kc.Record { return kc.ConfluentConsume(t, lbKafka(c), topic, 3, n) }},
			{"kafka-python", func(topic string, sent []kc.Record) []kc.Record {
				return kc.KafkaPythonProduce(t, lbKafka(c), topic, "gzip", sent)
			}, func(topic string, n int) []kc.Record { return kc.KafkaPythonConsume(t, lbKafka(c), topic, 3, n) }},
		} {
			topic := "lb-" + tc.name
			kafkaTopic(t, adm, topic, 3)
			sent := kc.Records(90, tc.name, true)
			acked := tc.produce(topic, sent)
			kc.CheckRoundTrip(t, c.LBURL, topic, 3, sent, acked, tc.consume(topic, len(sent)), client.WithToken(c.AdminKey))
		}
	})

	t.Run("kcat produce loop with kill -9", func(t *testing.T) {
		const topic, partitions = "lb-kcat-loop", int32(3)
		kafkaTopic(t, adm, topic, partitions)
		loop := startKcatLoop(t, lbKafka(c), topic)
		loop.waitRounds(t, 5)
		victim := c.AgentIDs()[1]
		if err := c.KillAgent(context.Background(), victim); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed %s with SIGKILL after %d acknowledged rounds", victim, loop.rounds())
		loop.waitRounds(t, loop.rounds()+8) // writes go on through the others
		acked := loop.halt(t)

		msgs := kc.KcatConsume(t, lbKafka(c), topic)
		got := map[string]int{}
		for _, m := range msgs {
			if m.Key == nil || m.Payload == nil || *m.Key != *m.Payload {
				t.Fatalf("message %+v", m)
			}
			got[*m.Key]++
		}
		var lost []string
		dups := 0
		for _, k := range acked {
			switch n := got[k]; {
			case n == 0:
				lost = append(lost, k)
			case n > 1:
				dups++
			}
		}
		if len(lost) > 0 {
			t.Fatalf("%d of %d acknowledged records lost, e.g. %v", len(lost), len(acked), lost[:min(5, len(lost))])
		}
		// The same log over HTTP, through the load balancer.
		http := kc.OverHTTP(t, c.LBURL, topic, partitions, len(msgs), client.WithToken(c.AdminKey))
		for _, m := range msgs {
			if h := http[[2]int64{int64(m.Partition), m.Offset}]; string(kc.Bytes(t, h.Key)) != *m.Key {
				t.Fatalf("HTTP reads %q at %d/%d, kcat read %q", kc.Bytes(t, h.Key), m.Partition, m.Offset, *m.Key)
			}
		}
		t.Logf("%d records acknowledged in %d rounds, all in the log (%d written twice by retries, %d unacknowledged rounds' records present)",
			len(acked), loop.rounds(), dups, len(msgs)-len(acked)-dups)
	})
}

// kcatLoop runs kcat -P again and again, each time with a fresh round of
// records; a round is acknowledged when kcat exits 0 (kcat waits for every
// delivery report and exits 1 when one fails).
type kcatLoop struct {
	mu      sync.Mutex
	acked   []string
	n       int
	failed  int
	lastErr error
	stop    chan struct{}
	done    chan struct{}
}

func startKcatLoop(t *testing.T, b kc.Broker, topic string) *kcatLoop {
	t.Helper()
	l := &kcatLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for round := 0; ; round++ {
			select {
			case <-l.stop:
				return
			default:
			}
			var in bytes.Buffer
			var keys []string
			for i := range 40 {
				k := fmt.Sprintf("r%d-%d", round, i)
				keys = append(keys, k)
				fmt.Fprintf(&in, "%s:%s\n", k, k)
			}
			_, err := kc.TryRun(t, in.Bytes(), "kcat", append(b.KcatArgs(), "-P", "-t", topic, "-K:", "-z", "snappy",
				"-X", "enable.idempotence=true", "-X", "partitioner=murmur2_random", "-X", "linger.ms=5",
				"-X", "message.timeout.ms=60000")...)
			l.mu.Lock()
			if err == nil {
				l.acked = append(l.acked, keys...)
				l.n++
			} else {
				l.failed++
				l.lastErr = err
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *kcatLoop) rounds() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func (l *kcatLoop) waitRounds(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d acknowledged kcat rounds", n), 3*time.Minute, func() bool { return l.rounds() >= n })
}

// halt stops the loop and returns the acknowledged keys.
func (l *kcatLoop) halt(t *testing.T) []string {
	t.Helper()
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed > 0 {
		// A round may fail while the killed agent's connections break;
		// its records are not counted as acknowledged.
		t.Logf("%d kcat rounds failed; the last: %s", l.failed, strings.SplitN(fmt.Sprint(l.lastErr), "\n", 2)[0])
	}
	return l.acked
}
