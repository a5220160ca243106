package agent

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"silt/metadata"
)

// topicCache keeps recent topic descriptions so that produce and fetch do
// not read Postgres for every request. Entries live for ttl; changes made
// through this agent drop them at once, changes made elsewhere are seen
// within ttl (a deleted topic is caught at commit time regardless).
type topicCache struct {
	store  TopicStore
	ttl    time.Duration
	group  singleflight.Group
	mu     sync.Mutex
	byName map[string]cachedTopic
}

type cachedTopic struct {
	topic metadata.Topic
	at    time.Time
}

// topicLookupTimeout bounds one shared topic lookup.
const topicLookupTimeout = 10 * time.Second

// maxCachedTopics bounds the cache; past it, the cache is cleared.
const maxCachedTopics = 10_000

func newTopicCache(store TopicStore, ttl time.Duration) *topicCache {
	return &topicCache{store: store, ttl: ttl, byName: map[string]cachedTopic{}}
}

func (c *topicCache) get(ctx context.Context, name string) (metadata.Topic, error) {
	c.mu.Lock()
	e, ok := c.byName[name]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.topic, nil
	}
	v, err, _ := c.group.Do(name, func() (any, error) {
		// Shared by every caller waiting on this name: one client going
		// away must not fail the others.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), topicLookupTimeout)
		defer cancel()
		t, err := c.store.GetTopic(lctx, name)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if len(c.byName) >= maxCachedTopics {
			c.byName = map[string]cachedTopic{}
		}
		c.byName[name] = cachedTopic{topic: t, at: time.Now()}
		c.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return metadata.Topic{}, err
	}
	return v.(metadata.Topic), nil
}

func (c *topicCache) forget(name string) {
	c.mu.Lock()
	delete(c.byName, name)
	c.mu.Unlock()
}
