package agentd

import (
	"strings"
	"testing"
)

func validConfig(limit int64) Config {
	c := DefaultConfig()
	c.AgentID, c.DatabaseURL = "m", "postgres://x@127.0.0.1/x"
	c.MemoryLimit = limit
	return c
}

func budgetSum(c Config) int64 {
	var n int64
	for _, b := range c.MemoryBudgets() {
		n += b.Bytes
	}
	return n
}

// The defaults are the budgets derived from 512 MiB, as documented.
func TestDefaultBudgets(t *testing.T) {
	c := DefaultConfig()
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		got, want int64
	}{
		{"memory limit", c.MemoryLimit, 512 * mib},
		{"buffer", c.Batcher.MaxBufferBytes, 64 * mib},
		{"flushes", int64(c.Batcher.MaxInflightFlushes), 4},
		{"cache", c.Fetch.CacheBytes, 8 * mib},
		{"object cache", c.Fetch.ObjectCacheBytes, 64 * mib},
		{"batch cache", c.Fetch.BatchCacheBytes, 8 * mib},
		{"in-flight requests", c.HTTP.MaxInflightRequestBytes, 32 * mib},
		{"request", c.HTTP.MaxRequestBytes, 16 * mib},
		{"in-flight fetches", c.Fetch.MaxInflightBytes, 32 * mib},
		{"Kafka in flight", c.Kafka.MaxInflightBytes, 32 * mib},
		{"Kafka request", c.Kafka.MaxRequestBytes, 32 * mib},
		{"Kafka fetch", c.Kafka.MaxFetchBytes, 32 * mib},
		{"compaction map", c.Ownership.Janitor.CompactMapBytes, 16 * mib},
		{"merge target", c.Ownership.Janitor.MergeTargetBytes, 32 * mib},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// Budgets derived from any limit fit under it with the headroom, with or
// without the Kafka listener, for any segment size the limit can hold.
func TestDerivedBudgetsAlwaysFit(t *testing.T) {
	for _, limit := range []int64{MinMemoryLimit, 200 << 20, 256 << 20, 300 << 20, 512 << 20, 1 << 30, 3 << 30, 64 << 30} {
		for _, seg := range []int{1 << 20, 4 << 20, 8 << 20} {
			for _, kafka := range []bool{false, true} {
				c := validConfig(limit)
				c.Batcher.MaxSegmentBytes = seg
				if kafka {
					c.Kafka.Listen, c.Kafka.AdvertisedAddr, c.HTTP.Auth = "127.0.0.1:9092", "127.0.0.1:9092", "none"
				}
				c.DeriveBudgets(nil)
				if err := c.Validate(); err != nil {
					t.Errorf("limit %s, segment %s, kafka %v: %v", size(limit), size(int64(seg)), kafka, err)
				}
				if sum := budgetSum(c); sum > limit*3/4 {
					t.Errorf("limit %s: budgets %s, over 3/4 of it", size(limit), size(sum))
				}
			}
		}
	}
}

// A limit halves every derived budget; flushes follow what fits.
func TestBudgetsFollowTheLimit(t *testing.T) {
	c := validConfig(256 << 20)
	c.DeriveBudgets(nil)
	if c.Batcher.MaxBufferBytes != 32<<20 || c.Fetch.ObjectCacheBytes != 32<<20 || c.Fetch.CacheBytes != 4<<20 || c.Batcher.MaxInflightFlushes != 2 {
		t.Fatalf("at 256 MiB: buffer %d, object cache %d, cache %d, flushes %d", c.Batcher.MaxBufferBytes, c.Fetch.ObjectCacheBytes, c.Fetch.CacheBytes, c.Batcher.MaxInflightFlushes)
	}
	c.MemoryLimit = 4 << 30
	c.DeriveBudgets(nil)
	if c.Batcher.MaxBufferBytes != 512<<20 || c.Batcher.MaxInflightFlushes != 4 || c.Kafka.MaxRequestBytes != 64<<20 {
		t.Fatalf("at 4 GiB: buffer %d, flushes %d, Kafka request %d", c.Batcher.MaxBufferBytes, c.Batcher.MaxInflightFlushes, c.Kafka.MaxRequestBytes)
	}
}

// Settings given on their own are kept; when they do not fit, Validate
// names every budget and its settings.
func TestExplicitBudgetsMustFit(t *testing.T) {
	c := validConfig(512 << 20)
	c.Fetch.CacheBytes = 1 << 30
	c.DeriveBudgets(func(s string) bool { return s == SettingCacheBytes })
	if c.Fetch.CacheBytes != 1<<30 {
		t.Fatalf("a cache size given on its own became %d", c.Fetch.CacheBytes)
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("a 1 GiB cache under a 512 MiB limit was accepted")
	}
	for _, want := range []string{"--memory-limit 512MiB", "--cache-bytes 1GiB", "--max-buffer-bytes 64MiB", "--max-inflight-flushes 4 × 2 × --max-segment-bytes 8MiB",
		"--max-inflight-fetch-bytes 32MiB", "--compact-map-bytes 16MiB + 2 × --merge-target-bytes 32MiB", "128MiB of headroom"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	c.Fetch.CacheBytes = 8 << 20
	if err := c.Validate(); err != nil {
		t.Fatalf("back to the derived size: %v", err)
	}
	c.MemoryLimit = MinMemoryLimit - 1
	c.DeriveBudgets(nil)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "below the least") {
		t.Fatalf("a limit under the minimum: %v", err)
	}
}
