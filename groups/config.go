package groups

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Config bounds the coordinator.
type Config struct {
	// DefaultSessionTimeout applies when a join names none (Kafka's
	// session.timeout.ms default).
	DefaultSessionTimeout time.Duration
	// MinSessionTimeout and MaxSessionTimeout bound the session timeout a
	// member may ask for (Kafka's group.min/max.session.timeout.ms).
	MinSessionTimeout time.Duration
	MaxSessionTimeout time.Duration
	// NewMemberTimeout bounds how long a member that joined is kept
	// without a heartbeat, commit or group fetch since (its session
	// timeout when shorter): members that join and are never heard of
	// again cannot hold the group's places for a whole session.
	NewMemberTimeout time.Duration
	// MaxHeartbeatInterval caps the heartbeat interval joins suggest,
	// which is otherwise a third of the session timeout.
	MaxHeartbeatInterval time.Duration
	// MaxMembers bounds the members of one group.
	MaxMembers int
	// MaxTopics bounds the topics one member subscribes to.
	MaxTopics int
	// MaxMetadataBytes bounds a committed offset's metadata (Kafka's
	// offset.metadata.max.bytes).
	MaxMetadataBytes int
	// LagCacheTTL is how long the lag collector reuses one read of
	// Postgres across scrapes.
	LagCacheTTL time.Duration
	// LagMaxSeries bounds the lag series one scrape exports.
	LagMaxSeries int
	// LagQueryTimeout bounds the collector's query.
	LagQueryTimeout time.Duration
	// LagHistoryInterval is how often each agent samples every group's
	// total lag for the console's chart, and LagHistoryWindow how long it
	// keeps the samples.
	LagHistoryInterval time.Duration
	LagHistoryWindow   time.Duration

	// InitialRebalanceDelay holds the first rebalance of an empty Kafka
	// group this long for more members, as Kafka's
	// group.initial.rebalance.delay.ms (0: none).
	InitialRebalanceDelay time.Duration
	// MaxKafkaMetadataBytes bounds what a Kafka member's JoinGroup offers
	// (its protocols' metadata together) and the assignment the leader
	// gives each member: both are kept in Postgres.
	MaxKafkaMetadataBytes int
	// MaxParkedWait bounds one wait of a parked JoinGroup or SyncGroup
	// between looks at the group, should a notification go missing.
	MaxParkedWait time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		DefaultSessionTimeout: 45 * time.Second,
		MinSessionTimeout:     time.Second,
		MaxSessionTimeout:     5 * time.Minute,
		NewMemberTimeout:      30 * time.Second,
		MaxHeartbeatInterval:  3 * time.Second,
		MaxMembers:            1000,
		MaxTopics:             1000,
		MaxMetadataBytes:      4096,
		LagCacheTTL:           15 * time.Second,
		LagMaxSeries:          10_000,
		LagQueryTimeout:       5 * time.Second,
		LagHistoryInterval:    30 * time.Second,
		LagHistoryWindow:      time.Hour,
		InitialRebalanceDelay: 3 * time.Second,
		MaxKafkaMetadataBytes: 1 << 20,
		MaxParkedWait:         10 * time.Second,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.MinSessionTimeout <= 0:
		return errors.New("groups: min session timeout must be positive")
	case c.MaxSessionTimeout < c.MinSessionTimeout:
		return errors.New("groups: max session timeout must be at least the min")
	case c.DefaultSessionTimeout < c.MinSessionTimeout || c.DefaultSessionTimeout > c.MaxSessionTimeout:
		return fmt.Errorf("groups: default session timeout %v must be within [%v, %v]", c.DefaultSessionTimeout, c.MinSessionTimeout, c.MaxSessionTimeout)
	case c.MaxSessionTimeout > 24*time.Hour:
		return errors.New("groups: max session timeout must be at most 24h")
	case c.NewMemberTimeout <= 0:
		return errors.New("groups: new member timeout must be positive")
	case c.MaxHeartbeatInterval <= 0:
		return errors.New("groups: max heartbeat interval must be positive")
	case c.MaxMembers < 1:
		return errors.New("groups: max members must be positive")
	case c.MaxTopics < 1:
		return errors.New("groups: max topics must be positive")
	case c.MaxMetadataBytes < 0:
		return errors.New("groups: max metadata bytes must not be negative")
	case c.LagCacheTTL < 0:
		return errors.New("groups: lag cache TTL must not be negative")
	case c.LagMaxSeries < 1:
		return errors.New("groups: lag max series must be positive")
	case c.LagQueryTimeout <= 0:
		return errors.New("groups: lag query timeout must be positive")
	case c.LagHistoryInterval <= 0 || c.LagHistoryWindow < c.LagHistoryInterval:
		return errors.New("groups: the lag history interval must be positive and at most its window")
	case c.LagHistoryWindow/c.LagHistoryInterval > 10_000:
		return errors.New("groups: the lag history window may hold at most 10,000 samples")
	case c.InitialRebalanceDelay < 0:
		return errors.New("groups: initial rebalance delay must not be negative")
	case c.MaxKafkaMetadataBytes < 1024:
		return errors.New("groups: max Kafka metadata bytes must be at least 1 KiB")
	case c.MaxParkedWait <= 0:
		return errors.New("groups: max parked wait must be positive")
	}
	return nil
}

// heartbeatInterval is what a join suggests for a session timeout.
func (c Config) heartbeatInterval(session time.Duration) time.Duration {
	return max(min(session/3, c.MaxHeartbeatInterval), time.Millisecond)
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ValidName applies the topic-name rules to group names: 1 to 249
// characters of [a-zA-Z0-9._-], and neither "." nor "..".
func ValidName(name string) error {
	if name == "." || name == ".." || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: group name %q must be 1 to 249 characters of [a-zA-Z0-9._-], and not . or ..", ErrInvalidName, name)
	}
	return nil
}

// memberIDRE bounds the member ids a request may name. The coordinator
// issues "m-" and a lowercase ULID; anything else is no member's.
var memberIDRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,255}$`)

// issuedIDRE matches the member ids the coordinator issues.
var issuedIDRE = regexp.MustCompile(`m-[0-9a-z]{26}`)

// RedactMemberIDs shortens every member id in s to its first eight
// characters (the "m-" and the start of the ULID's time): a member id
// authorizes the member's commits and fetches, so logs must not carry it
// whole.
func RedactMemberIDs(s string) string {
	return issuedIDRE.ReplaceAllStringFunc(s, func(id string) string { return id[:8] + "…" })
}

// ValidMemberID reports whether id could be a member id.
func ValidMemberID(id string) error {
	if !memberIDRE.MatchString(id) {
		return fmt.Errorf("%w: member id %q is not one this group issued (1 to 255 characters of [a-zA-Z0-9._-])", ErrInvalidArgument, id)
	}
	return nil
}
