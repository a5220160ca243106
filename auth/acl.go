package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Operation is what a request does to a resource (Kafka's names in
// parentheses).
type Operation string

// The operations.
const (
	OpProduce  Operation = "produce"  // Write
	OpConsume  Operation = "consume"  // Read
	OpDescribe Operation = "describe" // Describe
	OpCreate   Operation = "create"   // Create
	OpAlter    Operation = "alter"    // Alter, AlterConfigs
	OpDelete   Operation = "delete"   // Delete
)

// Operations lists every operation.
var Operations = []Operation{OpProduce, OpConsume, OpDescribe, OpCreate, OpAlter, OpDelete}

// ResourceType is the kind of resource an ACL entry covers.
type ResourceType string

// The resource types.
const (
	ResourceTopic   ResourceType = "topic"
	ResourceGroup   ResourceType = "group"
	ResourceCluster ResourceType = "cluster"
)

// PatternType says how an ACL entry's name matches resource names.
type PatternType string

// The pattern types.
const (
	// PatternLiteral matches the name exactly; the literal name "*"
	// matches every resource, as in Kafka.
	PatternLiteral PatternType = "literal"
	// PatternPrefix matches names that start with the entry's name.
	PatternPrefix PatternType = "prefix"
)

// validOps are the operations that mean something on each resource type
// (as in Kafka: a group is read, described and deleted; the cluster is
// where topics are created and the agents described).
var validOps = map[ResourceType][]Operation{
	ResourceTopic:   Operations,
	ResourceGroup:   {OpConsume, OpDescribe, OpDelete},
	ResourceCluster: {OpCreate, OpDescribe, OpAlter},
}

// ACL is one allow entry.
type ACL struct {
	ResourceType ResourceType `json:"resource_type"`
	PatternType  PatternType  `json:"pattern_type"`
	Name         string       `json:"name"`
	Operations   []Operation  `json:"operations"`
}

// maxACLName bounds an entry's name (Kafka topic names are at most 249).
const maxACLName = 255

// Validate checks an entry.
func (a ACL) Validate() error {
	ops, ok := validOps[a.ResourceType]
	if !ok {
		return fmt.Errorf("resource type %q: want topic, group or cluster", a.ResourceType)
	}
	if a.PatternType != PatternLiteral && a.PatternType != PatternPrefix {
		return fmt.Errorf("pattern type %q: want literal or prefix", a.PatternType)
	}
	if len(a.Name) > maxACLName || strings.ContainsAny(a.Name, "\x00\n\r") {
		return fmt.Errorf("resource name %q: at most %d characters, no control characters", a.Name, maxACLName)
	}
	if a.PatternType == PatternLiteral && a.Name == "" && a.ResourceType != ResourceCluster {
		return errors.New("a literal entry needs a resource name (use * for every resource)")
	}
	if len(a.Operations) == 0 {
		return errors.New("an entry needs at least one operation")
	}
	for _, op := range a.Operations {
		if !slices.Contains(ops, op) {
			return fmt.Errorf("operation %q does not apply to %s resources (want one of %s)", op, a.ResourceType, joinOps(ops))
		}
	}
	return nil
}

func joinOps(ops []Operation) string {
	s := make([]string, len(ops))
	for i, o := range ops {
		s[i] = string(o)
	}
	return strings.Join(s, ", ")
}

// String is the entry in the command line's form, OPS:TYPE:PATTERN.
func (a ACL) String() string {
	name := a.Name
	if a.PatternType == PatternPrefix {
		name += "*"
	}
	return joinOps(a.Operations) + ":" + string(a.ResourceType) + ":" + name
}

// ParseACL reads the command line's form OP[,OP...]:TYPE:PATTERN, such as
// produce:topic:orders, consume,describe:topic:logs-* (a trailing *
// makes a prefix pattern; * alone matches every name) or describe:cluster.
func ParseACL(s string) (ACL, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) < 2 {
		return ACL{}, fmt.Errorf("acl %q: want OPERATION[,OPERATION...]:TYPE:PATTERN, such as produce:topic:orders", s)
	}
	a := ACL{ResourceType: ResourceType(strings.TrimSpace(parts[1])), PatternType: PatternLiteral}
	for _, op := range strings.Split(parts[0], ",") {
		op = strings.TrimSpace(op)
		if op != "" && !slices.Contains(a.Operations, Operation(op)) {
			a.Operations = append(a.Operations, Operation(op))
		}
	}
	name := "*"
	if len(parts) == 3 {
		name = parts[2]
	} else if a.ResourceType != ResourceCluster {
		return ACL{}, fmt.Errorf("acl %q: a %s entry needs a pattern, such as %s:%s:name or %s:%s:prefix*", s, a.ResourceType, parts[0], parts[1], parts[0], parts[1])
	}
	if p, ok := strings.CutSuffix(name, "*"); ok && name != "*" {
		a.PatternType, name = PatternPrefix, p
	}
	a.Name = name
	if err := a.Validate(); err != nil {
		return ACL{}, fmt.Errorf("acl %q: %w", s, err)
	}
	return a, nil
}

// matches reports whether the entry covers the resource named name.
func (a ACL) matches(rt ResourceType, name string) bool {
	if a.ResourceType != rt {
		return false
	}
	if rt == ResourceCluster {
		return true // one cluster
	}
	if a.PatternType == PatternPrefix {
		return strings.HasPrefix(name, a.Name)
	}
	return a.Name == "*" || a.Name == name
}

// grants reports whether the entry's operations include op, directly or,
// as in Kafka, implied: produce, consume, alter and delete imply describe.
func (a ACL) grants(op Operation) bool {
	for _, have := range a.Operations {
		if have == op {
			return true
		}
		if op == OpDescribe && (have == OpProduce || have == OpConsume || have == OpAlter || have == OpDelete) {
			return true
		}
	}
	return false
}

// Quota bounds a key's traffic over the whole cluster; each agent enforces
// its share (the quota divided by the live agents). Zero is unlimited.
type Quota struct {
	ProduceBytesPerSec int64   `json:"produce_bytes_per_sec,omitempty"`
	FetchBytesPerSec   int64   `json:"fetch_bytes_per_sec,omitempty"`
	RequestsPerSec     float64 `json:"requests_per_sec,omitempty"`
}

// Validate checks the quota.
func (q Quota) Validate() error {
	if q.ProduceBytesPerSec < 0 || q.FetchBytesPerSec < 0 || q.RequestsPerSec < 0 {
		return errors.New("quotas must not be negative (0 is unlimited)")
	}
	return nil
}

// Principal is who a request comes from: a key (or, without
// authentication, Anonymous). Principals are immutable.
type Principal struct {
	KeyID     string
	Name      string
	Admin     bool
	ACLs      []ACL
	Quota     Quota
	ExpiresAt time.Time // zero: never
	// Anonymous marks requests of an agent run with --auth=none: allowed
	// everything.
	Anonymous bool
}

// Anonymous is the principal of every request when authentication is off.
var Anonymous = &Principal{Name: "anonymous", Admin: true, Anonymous: true}

// Allows reports whether p may do op on the resource of type rt named
// name, with Kafka's rules: admin may do everything; an entry matching the
// resource must grant op (describe is implied by produce, consume, alter
// and delete); creating a topic is also allowed by create on the cluster.
func (p *Principal) Allows(op Operation, rt ResourceType, name string) bool {
	if p == nil {
		return false
	}
	if p.Admin {
		return true
	}
	for _, a := range p.ACLs {
		if a.matches(rt, name) && a.grants(op) {
			return true
		}
	}
	if rt == ResourceTopic && op == OpCreate {
		return p.Allows(OpCreate, ResourceCluster, "")
	}
	return false
}

// AllowsAny reports whether p may do op on at least one resource of type
// rt (for requests whose resource is not named yet).
func (p *Principal) AllowsAny(op Operation, rt ResourceType) bool {
	if p == nil {
		return false
	}
	if p.Admin {
		return true
	}
	for _, a := range p.ACLs {
		if a.ResourceType == rt && a.grants(op) {
			return true
		}
	}
	return rt == ResourceTopic && op == OpCreate && p.Allows(OpCreate, ResourceCluster, "")
}

// DeniedError is an authorization refusal: it names the operation and the
// resource, never anything the key may not see.
type DeniedError struct {
	Key          string // the key's name
	Operation    Operation
	ResourceType ResourceType
	Resource     string
	// AdminOnly marks operations that only admin keys may do.
	AdminOnly bool
}

func (e *DeniedError) Error() string {
	if e.AdminOnly {
		return fmt.Sprintf("key %q is not an admin key; this needs one", e.Key)
	}
	if e.ResourceType == ResourceCluster {
		return fmt.Sprintf("key %q may not %s the cluster", e.Key, e.Operation)
	}
	if e.Resource == "" {
		return fmt.Sprintf("key %q may not %s any %s", e.Key, e.Operation, e.ResourceType)
	}
	return fmt.Sprintf("key %q may not %s %s %q", e.Key, e.Operation, e.ResourceType, e.Resource)
}

// Authorize returns nil when p may do op on the resource, else a
// *DeniedError.
func Authorize(p *Principal, op Operation, rt ResourceType, name string) error {
	if p.Allows(op, rt, name) {
		return nil
	}
	return &DeniedError{Key: p.name(), Operation: op, ResourceType: rt, Resource: name}
}

// AuthorizeAdmin returns nil for admin keys, else a *DeniedError.
func AuthorizeAdmin(p *Principal) error {
	if p != nil && p.Admin {
		return nil
	}
	return &DeniedError{Key: p.name(), AdminOnly: true}
}

func (p *Principal) name() string {
	if p == nil {
		return ""
	}
	return p.Name
}
