package topiccache

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"silt/metadata"
)

// Store is what the cache reads through.
type Store interface {
	GetTopic(ctx context.Context, name string) (metadata.Topic, error)
}

const (
	// lookupTimeout bounds one shared lookup.
	lookupTimeout = 10 * time.Second
	// MaxEntries bounds the cache; past it, the cache is cleared.
	MaxEntries = 10_000
)

type entry struct {
	topic metadata.Topic
	at    time.Time
}

// Cache is a TTL cache of topics by name.
type Cache struct {
	store  Store
	ttl    time.Duration
	group  singleflight.Group
	mu     sync.Mutex
	byName map[string]entry
}

// New returns a cache over store whose entries live for ttl.
func New(store Store, ttl time.Duration) *Cache {
	return &Cache{store: store, ttl: ttl, byName: map[string]entry{}}
}

// Get returns the topic name, from the cache when its entry is fresh.
func (c *Cache) Get(ctx context.Context, name string) (metadata.Topic, error) {
	c.mu.Lock()
	e, ok := c.byName[name]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.topic, nil
	}
	v, err, _ := c.group.Do(name, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		t, err := c.store.GetTopic(lctx, name)
		if err != nil {
			return nil, err
		}
		c.Put(t)
		return t, nil
	})
	if err != nil {
		return metadata.Topic{}, err
	}
	return v.(metadata.Topic), nil
}

// Put records t as the current description of its name.
func (c *Cache) Put(t metadata.Topic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byName) >= MaxEntries {
		c.byName = map[string]entry{}
	}
	c.byName[t.Name] = entry{topic: t, at: time.Now()}
}

// Forget drops name's entry.
func (c *Cache) Forget(name string) {
	c.mu.Lock()
	delete(c.byName, name)
	c.mu.Unlock()
}
