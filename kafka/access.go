package kafka

import (
	"context"
	"encoding/json"
	"sync"

	"silt/auth"
)

// What each Kafka API needs, with Kafka's own rules mapped onto Silt's
// operations (docs/security.md): Produce is Write (produce) on the topic,
// Fetch Read (consume), ListOffsets, Metadata and DescribeConfigs Describe;
// CreateTopics Create on the topic or the cluster, DeleteTopics Delete,
// CreatePartitions and IncrementalAlterConfigs Alter; InitProducerId needs
// produce on some topic (Kafka: IdempotentWrite, or Write on any topic);
// DescribeCluster Describe on the cluster. Group APIs need Read (consume)
// on the group to join, sync, heartbeat, leave and commit, with Read on
// each topic committed; Describe on the group to find its coordinator,
// fetch its offsets (Describe on each topic) and describe it; Delete to
// delete it or its offsets. ListGroups lists what the key may describe.
// Refusals answer TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED or
// CLUSTER_AUTHORIZATION_FAILED where the resource is, as Kafka does.

// producerBindings caches which key each idempotent producer id belongs
// to: an id is bound to the key that asked for it, and no other key may
// produce with it (as over HTTP). A binding never changes once made.
type producerBindings struct {
	store ProducerKeys // nil: no bindings
	mu    sync.Mutex
	owner map[int64]string // "" for ids issued without a key
}

// maxCachedProducers bounds the cache; past it, it is cleared.
const maxCachedProducers = 100_000

// mayUse reports whether p may produce with producer id id.
func (b *producerBindings) mayUse(ctx context.Context, p *auth.Principal, id int64) (bool, error) {
	if b.store == nil || p == nil || p.Admin || id <= 0 {
		return true, nil
	}
	b.mu.Lock()
	owner, ok := b.owner[id]
	b.mu.Unlock()
	if !ok {
		var found bool
		var err error
		owner, found, err = b.store.ProducerKey(ctx, id)
		if err != nil {
			return false, err
		}
		if !found {
			return true, nil // unknown ids fail later, with UNKNOWN_PRODUCER_ID
		}
		b.remember(id, owner)
	}
	return owner == "" || owner == p.KeyID, nil
}

// bind binds a fresh producer id to p's key.
func (b *producerBindings) bind(ctx context.Context, p *auth.Principal, id int64) error {
	if b.store == nil || p == nil || p.KeyID == "" {
		return nil
	}
	if err := b.store.BindProducer(ctx, id, p.KeyID); err != nil {
		return err
	}
	b.remember(id, p.KeyID)
	return nil
}

func (b *producerBindings) remember(id int64, owner string) {
	b.mu.Lock()
	if len(b.owner) >= maxCachedProducers {
		b.owner = map[int64]string{}
	}
	b.owner[id] = owner
	b.mu.Unlock()
}

// jsonDetails encodes an audit entry's details.
func jsonDetails(v any) (json.RawMessage, error) { return json.Marshal(v) }
