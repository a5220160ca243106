package chaos

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"silt/auth"
)

// KafkaMember consumes the topic as a member of a Kafka consumer group
// with franz-go, through the load balancer's Kafka port (so its group
// requests reach any agent), with manual commits: poll, "process",
// commit what the poll handed, then let a rebalance proceed. Rebalances
// wait for that commit (BlockRebalanceOnPoll), as a careful Kafka
// application does, so a member hands on exactly what it committed.
//
// It records the same events as the HTTP members under its own group
// name: a join each time partitions are assigned (positions unknown until
// the first record: franz-go resumes from the committed offsets), a fetch
// per poll that returned records, and each commit. The checker applies
// the same group verdicts.
type KafkaMember struct {
	ID       int
	Group    string
	env      *workloadEnv
	progress *progress
}

func (m *KafkaMember) Name() string { return "kafka-" + strconv.Itoa(m.ID) }

func (m *KafkaMember) Run(ctx context.Context) {
	name := m.Name()
	// generation: franz-go does not say which; counted locally per
	// assignment for the history. The callbacks run on franz-go's
	// goroutines.
	var gen atomic.Int64
	assigned := func(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
		m.env.rec.Single(OK, Event{Process: name, F: FGroupJoin, Group: m.Group, Member: name, Generation: gen.Add(1)})
	}
	lost := func(_ context.Context, _ *kgo.Client, _ map[string][]int32) {
		m.env.rec.Single(Info, Event{Process: name, F: FGroupLeave, Group: m.Group, Member: name, Generation: gen.Load(), Error: "partitions revoked or lost"})
	}
	user, _ := auth.ParseToken(m.env.token) // SASL PLAIN: the key's id and the key
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(m.env.kafka),
		kgo.SASL(plain.Auth{User: user, Pass: m.env.token}.AsMechanism()),
		kgo.ConsumerGroup(m.Group),
		kgo.ConsumeTopics(m.env.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(10*time.Second),
		kgo.RebalanceTimeout(20*time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.FetchMaxWait(time.Second),
		kgo.RequestTimeoutOverhead(5*time.Second),
		kgo.RetryTimeout(30*time.Second),
		kgo.OnPartitionsAssigned(assigned),
		kgo.OnPartitionsRevoked(lost),
		kgo.OnPartitionsLost(lost),
	)
	if err != nil {
		panic(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = cl.LeaveGroupContext(cctx)
		cl.Close()
	}()
	for ctx.Err() == nil {
		fs := cl.PollRecords(ctx, 500)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return
		}
		recs := fs.Records()
		if len(recs) == 0 {
			cl.AllowRebalance()
			continue
		}
		ev := Event{Process: name, F: FGroupFetch, Group: m.Group, Member: name, Generation: gen.Load()}
		next := map[int32]int64{}
		for _, r := range recs {
			if r.Topic != m.env.topic {
				continue
			}
			ev.Records = append(ev.Records, Rec{P: r.Partition, O: r.Offset, V: string(r.Value)})
			next[r.Partition] = r.Offset + 1
		}
		m.env.rec.Single(OK, ev)
		for part, n := range next {
			m.progress.advance("group "+m.Group, part, n)
		}
		var offs []Offset
		for part, n := range next {
			offs = append(offs, Offset{P: part, O: n})
		}
		op := m.env.rec.Invoke(Event{Process: name, F: FGroupCommit, Group: m.Group, Member: name, Generation: gen.Load(), Offsets: offs})
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		err := cl.CommitRecords(cctx, recs...)
		cancel()
		if err != nil {
			// A commit that got no answer may have happened.
			op.End(Info, Event{Error: err.Error()})
		} else {
			op.End(OK, Event{})
		}
		cl.AllowRebalance()
		if errors.Is(err, context.Canceled) {
			return
		}
	}
}
