package agent

import (
	"context"
	"net/http"
	"sync"

	"silt/auth"
	"silt/batcher"
	"silt/problem"
)

// An idempotent producer id belongs to the key that asked for it: the id
// is bound when POST /v1/producers issues it, and produce with an id bound
// to another key is refused (403) before anything is buffered. Both sit
// around the handlers' collaborators, so handlers stay as they are.

// producerBindings caches which key each producer id belongs to. A binding
// never changes once the id is handed out, so entries need no expiry.
type producerBindings struct {
	store ProducerKeys
	mu    sync.Mutex
	owner map[int64]string // "" for ids issued without a key
}

// maxCachedProducers bounds the cache; past it, it is cleared.
const maxCachedProducers = 100_000

func (b *producerBindings) ownerOf(ctx context.Context, id int64) (string, bool, error) {
	b.mu.Lock()
	owner, ok := b.owner[id]
	b.mu.Unlock()
	if ok {
		return owner, true, nil
	}
	owner, found, err := b.store.ProducerKey(ctx, id)
	if err != nil || !found {
		return "", false, err
	}
	b.remember(id, owner)
	return owner, true, nil
}

func (b *producerBindings) remember(id int64, owner string) {
	b.mu.Lock()
	if len(b.owner) >= maxCachedProducers {
		b.owner = map[int64]string{}
	}
	b.owner[id] = owner
	b.mu.Unlock()
}

// boundProducer refuses parts whose producer id another key holds.
type boundProducer struct {
	Producer
	bindings *producerBindings
}

func (p boundProducer) Produce(ctx context.Context, parts []batcher.Part) ([]batcher.Result, error) {
	who := auth.FromContext(ctx)
	if who != nil && !who.Admin {
		var checked int64
		for i := range parts {
			id := parts[i].ProducerID
			if id <= 0 || id == checked {
				continue
			}
			owner, found, err := p.bindings.ownerOf(ctx, id)
			if err != nil {
				return nil, err
			}
			if found && owner != "" && owner != who.KeyID {
				return nil, newProblem(http.StatusForbidden, problem.CodeForbidden,
					"producer id %d belongs to another key; ask POST /v1/producers for an id of your own", id)
			}
			checked = id
		}
	}
	return p.Producer.Produce(ctx, parts)
}

// bindingTopics binds the producer ids it issues to the asking key.
type bindingTopics struct {
	TopicStore
	bindings *producerBindings
}

func (t bindingTopics) NewProducerID(ctx context.Context) (int64, error) {
	id, err := t.TopicStore.NewProducerID(ctx)
	if err != nil {
		return 0, err
	}
	who := auth.FromContext(ctx)
	if who == nil || who.KeyID == "" {
		return id, nil
	}
	if err := t.bindings.store.BindProducer(ctx, id, who.KeyID); err != nil {
		return 0, err
	}
	t.bindings.remember(id, who.KeyID)
	return id, nil
}
