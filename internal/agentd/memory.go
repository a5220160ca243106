package agentd

import (
	"fmt"
	"strconv"
	"strings"
)

// Memory: one limit, Config.MemoryLimit, bounds the agent's resident
// memory. The Go runtime keeps what it manages under RuntimeMemoryLimit
// (cmd/silt sets it as the soft memory limit), and every memory budget of
// the agent is a fraction of the limit unless set on its own. Validate
// checks that the budgets together leave the runtime its headroom.
// docs/deploy.md explains the figures.
const (
	// DefaultMemoryLimit is the limit when none is given.
	DefaultMemoryLimit = 512 << 20
	// MinMemoryLimit is the smallest limit an agent runs with.
	MinMemoryLimit = 192 << 20
	// minHeadroom is the least memory left outside the budgets.
	minHeadroom = 48 << 20
	// unmanaged is resident memory the Go runtime's limit does not count:
	// the program's code and read-only data as they are paged in (24 MiB
	// measured), and the threads' C stacks.
	unmanaged = 32 << 20
	// maxDerivedFlushes caps the in-flight flushes derived from the limit
	// (a larger limit keeps the batcher's default, four).
	maxDerivedFlushes = 4
	// defaultMaxRequestBytes, defaultKafkaRequestBytes and
	// defaultKafkaFetchBytes are the single-request caps, lowered to their
	// in-flight budget when that is smaller.
	defaultMaxRequestBytes   = 16 << 20
	defaultKafkaRequestBytes = 64 << 20
	defaultKafkaFetchBytes   = 64 << 20
	// defaultMergeTargetBytes caps the derived merge target: the size of
	// merged objects is a matter of request economics, not of memory.
	defaultMergeTargetBytes = 32 << 20
)

// The settings the limit derives, by their flag names.
const (
	SettingMaxBufferBytes        = "max-buffer-bytes"
	SettingMaxInflightFlushes    = "max-inflight-flushes"
	SettingCacheBytes            = "cache-bytes"
	SettingObjectCacheBytes      = "object-cache-bytes"
	SettingBatchCacheBytes       = "batch-cache-bytes"
	SettingMaxInflightRequest    = "max-inflight-request-bytes"
	SettingMaxRequestBytes       = "max-request-bytes"
	SettingMaxInflightFetchBytes = "max-inflight-fetch-bytes"
	SettingKafkaMaxInflightBytes = "kafka-max-inflight-bytes"
	SettingKafkaMaxRequestBytes  = "kafka-max-request-bytes"
	SettingCompactMapBytes       = "compact-map-bytes"
	SettingMergeTargetBytes      = "merge-target-bytes"
)

// Headroom is the memory a limit leaves outside the budgets: for the Go
// runtime (garbage not yet collected, stacks, its own structures), the
// program's code, connections (docs/deploy.md measures one) and what no
// budget counts. A quarter of the limit, and at least 48 MiB.
func Headroom(limit int64) int64 { return max(limit/4, minHeadroom) }

// GCPercent is the Go collector's GOGC for an agent (unless GOGC is set):
// with the soft memory limit in force the collector need not also run each
// time the heap doubles; at 400 it runs when the heap reaches five times
// what was live, or nears the limit, whichever comes first. Under load the
// limit sets the pace: a third of the collections GOGC=100 makes (33
// against 10 over the main workload's 40 s), for the memory the limit
// grants anyway; an idle agent's heap stays small.
const GCPercent = 400

// RuntimeMemoryLimit is the Go runtime's soft memory limit for an agent of
// the given limit: 32 MiB less, for the resident memory the runtime does
// not count (the program's code), so that the process stays within limit.
func RuntimeMemoryLimit(limit int64) int64 { return limit - unmanaged }

// DeriveBudgets sets every memory budget from c.MemoryLimit, except the
// settings keep names (those set on their own). The fractions of the limit:
//
//	max-buffer-bytes            1/8
//	in-flight flushes           1/8: max-inflight-flushes is as many flushes as
//	                            fit at 2 × max-segment-bytes each (the segment
//	                            and its compressor's window), 1 to 4
//	cache-bytes                 1/64 (decoded chunks: the record encodings)
//	object-cache-bytes          1/8  (the object-span cache: whole fresh
//	                            objects for tails, spans of objects read
//	                            once or ahead for catch-up reads)
//	batch-cache-bytes           1/64
//	max-inflight-request-bytes  1/16 (max-request-bytes: 16 MiB, at most that)
//	max-inflight-fetch-bytes    1/16
//	kafka-max-inflight-bytes    1/16 (kafka-max-request-bytes and the Kafka
//	                            fetch cap: 64 MiB, at most that)
//	compact-map-bytes           1/32
//	merge-target-bytes          1/16, at most 32 MiB (a merge holds 2 × this)
//
// Together 3/4 of the limit with the Kafka listener on, 11/16 without:
// derived budgets always leave the Headroom.
func (c *Config) DeriveBudgets(keep func(setting string) bool) {
	if keep == nil {
		keep = func(string) bool { return false }
	}
	l := c.MemoryLimit
	set := func(setting string, p *int64, v int64) {
		if !keep(setting) {
			*p = v
		}
	}
	set(SettingMaxBufferBytes, &c.Batcher.MaxBufferBytes, l/8)
	if !keep(SettingMaxInflightFlushes) {
		per := 2 * int64(max(c.Batcher.MaxSegmentBytes, 1))
		c.Batcher.MaxInflightFlushes = int(min(max(l/8/per, 1), maxDerivedFlushes))
	}
	set(SettingCacheBytes, &c.Fetch.CacheBytes, l/64)
	set(SettingObjectCacheBytes, &c.Fetch.ObjectCacheBytes, l/8)
	set(SettingBatchCacheBytes, &c.Fetch.BatchCacheBytes, l/64)
	set(SettingMaxInflightRequest, &c.HTTP.MaxInflightRequestBytes, l/16)
	set(SettingMaxRequestBytes, &c.HTTP.MaxRequestBytes, min(defaultMaxRequestBytes, c.HTTP.MaxInflightRequestBytes))
	set(SettingMaxInflightFetchBytes, &c.Fetch.MaxInflightBytes, l/16)
	set(SettingKafkaMaxInflightBytes, &c.Kafka.MaxInflightBytes, l/16)
	set(SettingKafkaMaxRequestBytes, &c.Kafka.MaxRequestBytes, min(defaultKafkaRequestBytes, c.Kafka.MaxInflightBytes))
	c.Kafka.MaxFetchBytes = min(defaultKafkaFetchBytes, c.Kafka.MaxInflightBytes) // no setting of its own
	set(SettingCompactMapBytes, &c.Ownership.Janitor.CompactMapBytes, l/32)
	set(SettingMergeTargetBytes, &c.Ownership.Janitor.MergeTargetBytes, min(defaultMergeTargetBytes, l/16))
}

// MemoryBudget is one part of the agent's memory and the settings that
// size it.
type MemoryBudget struct {
	// What the memory holds.
	What string
	// Settings is how the bytes follow from the settings, by flag names
	// ("--cache-bytes 32MiB").
	Settings string
	Bytes    int64
}

// MemoryBudgets lists what the budgets let the agent hold at once; the
// Kafka listener's only while it is on.
func (c Config) MemoryBudgets() []MemoryBudget {
	b, j := c.Batcher, c.Ownership.Janitor
	seg := int64(b.MaxSegmentBytes)
	out := []MemoryBudget{
		{"records buffered and in flushes", flag(SettingMaxBufferBytes, b.MaxBufferBytes), b.MaxBufferBytes},
		{"segments being built and written", fmt.Sprintf("--%s %d × 2 × --max-segment-bytes %s", SettingMaxInflightFlushes, b.MaxInflightFlushes, size(seg)),
			int64(b.MaxInflightFlushes) * 2 * seg},
		{"decoded-chunk cache", flag(SettingCacheBytes, c.Fetch.CacheBytes), c.Fetch.CacheBytes},
		{"object-span cache", flag(SettingObjectCacheBytes, c.Fetch.ObjectCacheBytes), c.Fetch.ObjectCacheBytes},
		{"stored-batch cache", flag(SettingBatchCacheBytes, c.Fetch.BatchCacheBytes), c.Fetch.BatchCacheBytes},
		{"produce bodies in flight", flag(SettingMaxInflightRequest, c.HTTP.MaxInflightRequestBytes), c.HTTP.MaxInflightRequestBytes},
		{"fetch responses in flight", flag(SettingMaxInflightFetchBytes, c.Fetch.MaxInflightBytes), c.Fetch.MaxInflightBytes},
	}
	if c.Kafka.Listen != "" {
		out = append(out, MemoryBudget{"Kafka requests and responses in flight", flag(SettingKafkaMaxInflightBytes, c.Kafka.MaxInflightBytes), c.Kafka.MaxInflightBytes})
	}
	out = append(out, MemoryBudget{"compaction map and merge rewrite",
		fmt.Sprintf("%s + 2 × %s", flag(SettingCompactMapBytes, j.CompactMapBytes), flag(SettingMergeTargetBytes, j.MergeTargetBytes)),
		j.CompactMapBytes + 2*j.MergeTargetBytes})
	return out
}

// validateMemory checks that the budgets fit under the limit with its
// headroom.
func (c Config) validateMemory() error {
	l := c.MemoryLimit
	if l < MinMemoryLimit {
		return fmt.Errorf("--memory-limit %s is below the least an agent runs with, %s", size(l), size(MinMemoryLimit))
	}
	budgets := c.MemoryBudgets()
	var sum int64
	for _, b := range budgets {
		sum += b.Bytes
	}
	room := l - Headroom(l)
	if sum <= room {
		return nil
	}
	parts := make([]string, len(budgets))
	for i, b := range budgets {
		parts[i] = b.What + ": " + b.Settings
		if strings.ContainsAny(b.Settings, "×+") {
			parts[i] += " = " + size(b.Bytes)
		}
	}
	return fmt.Errorf("the memory budgets add up to %s, more than the %s that --memory-limit %s leaves after %s of headroom for the runtime and connections: %s; lower the settings given, leave them unset to derive them from the limit, or raise --memory-limit (see docs/deploy.md)",
		size(sum), size(room), size(l), size(Headroom(l)), strings.Join(parts, ", "))
}

func flag(setting string, v int64) string { return "--" + setting + " " + size(v) }

// size prints bytes in the largest binary unit that divides them, as the
// flags take them.
func size(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	if n >= 1<<20 {
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "MiB"
	}
	return strconv.FormatInt(n, 10)
}
