package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseACL(t *testing.T) {
	for in, want := range map[string]ACL{
		"produce:topic:orders":       {ResourceTopic, PatternLiteral, "orders", []Operation{OpProduce}},
		"consume:topic:logs-*":       {ResourceTopic, PatternPrefix, "logs-", []Operation{OpConsume}},
		"consume,describe:group:g1":  {ResourceGroup, PatternLiteral, "g1", []Operation{OpConsume, OpDescribe}},
		"describe:topic:*":           {ResourceTopic, PatternLiteral, "*", []Operation{OpDescribe}},
		"create:cluster":             {ResourceCluster, PatternLiteral, "*", []Operation{OpCreate}},
		"produce,produce:topic:a.b_": {ResourceTopic, PatternLiteral, "a.b_", []Operation{OpProduce}},
	} {
		got, err := ParseACL(in)
		if err != nil {
			t.Errorf("ParseACL(%q): %v", in, err)
			continue
		}
		if got.String() != want.String() || got.PatternType != want.PatternType || got.Name != want.Name {
			t.Errorf("ParseACL(%q) = %+v, want %+v", in, got, want)
		}
	}
	for _, bad := range []string{"", "produce", "produce:topic", "write:topic:x", "produce:queue:x", "produce:group:g",
		"create:group:g", "produce:cluster", ":topic:x", "consume:topic:"} {
		if a, err := ParseACL(bad); err == nil {
			t.Errorf("ParseACL(%q) accepted: %+v", bad, a)
		}
	}
}

// Authorization follows Kafka's rules, entry by entry.
func TestAllowsKafkaSemantics(t *testing.T) {
	p := &Principal{Name: "app", ACLs: []ACL{
		must(ParseACL("produce:topic:orders")),
		must(ParseACL("consume:topic:logs-*")),
		must(ParseACL("delete:topic:tmp")),
		must(ParseACL("consume:group:workers")),
		must(ParseACL("describe:group:*")),
	}}
	cases := []struct {
		op   Operation
		rt   ResourceType
		name string
		want bool
	}{
		{OpProduce, ResourceTopic, "orders", true},
		{OpProduce, ResourceTopic, "orders2", false}, // literal means exact
		{OpConsume, ResourceTopic, "orders", false},  // produce does not imply consume
		{OpDescribe, ResourceTopic, "orders", true},  // produce implies describe
		{OpConsume, ResourceTopic, "logs-app", true}, // prefix
		{OpConsume, ResourceTopic, "logs", false},
		{OpDescribe, ResourceTopic, "logs-x", true}, // consume implies describe
		{OpDescribe, ResourceTopic, "tmp", true},    // delete implies describe
		{OpAlter, ResourceTopic, "tmp", false},
		{OpCreate, ResourceTopic, "orders", false}, // produce does not imply create
		{OpConsume, ResourceGroup, "workers", true},
		{OpDelete, ResourceGroup, "workers", false},
		{OpDescribe, ResourceGroup, "anything", true}, // literal * is a wildcard
		{OpDescribe, ResourceCluster, "", false},
		{OpConsume, ResourceTopic, "workers", false}, // resource types do not mix
	}
	for _, c := range cases {
		if got := p.Allows(c.op, c.rt, c.name); got != c.want {
			t.Errorf("%s %s %q: %v, want %v", c.op, c.rt, c.name, got, c.want)
		}
		err := Authorize(p, c.op, c.rt, c.name)
		var d *DeniedError
		if c.want != (err == nil) || (!c.want && (!errors.As(err, &d) || !strings.Contains(err.Error(), string(c.op)))) {
			t.Errorf("Authorize %s %s %q: %v", c.op, c.rt, c.name, err)
		}
	}
	// Creating topics is allowed by create on the cluster, as in Kafka.
	creator := &Principal{ACLs: []ACL{must(ParseACL("create:cluster"))}}
	if !creator.Allows(OpCreate, ResourceTopic, "any") || creator.Allows(OpDelete, ResourceTopic, "any") {
		t.Error("create on the cluster must allow creating any topic and nothing more")
	}
	if !creator.AllowsAny(OpCreate, ResourceTopic) || p.AllowsAny(OpCreate, ResourceTopic) || !p.AllowsAny(OpProduce, ResourceTopic) {
		t.Error("AllowsAny")
	}
	admin := &Principal{Admin: true}
	if !admin.Allows(OpDelete, ResourceCluster, "") || AuthorizeAdmin(admin) != nil || AuthorizeAdmin(p) == nil {
		t.Error("admin may do everything; others are not admins")
	}
	var none *Principal
	if none.Allows(OpDescribe, ResourceTopic, "x") || none.AllowsAny(OpDescribe, ResourceTopic) {
		t.Error("a nil principal may do nothing")
	}
}

func TestTokens(t *testing.T) {
	tok, id, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != TokenLength || !strings.HasPrefix(tok, "silt_"+id+"_") {
		t.Fatalf("token %q id %q", tok, id)
	}
	if got, ok := ParseToken(tok); !ok || got != id {
		t.Fatalf("ParseToken: %q %v", got, ok)
	}
	tok2, _, _ := NewToken()
	if tok2 == tok || string(HashToken(tok)) == string(HashToken(tok2)) {
		t.Fatal("two tokens are the same")
	}
	for _, bad := range []string{"", tok[:len(tok)-1], strings.ToUpper(tok), strings.Replace(tok, "_", "-", 2),
		"silt_" + strings.Repeat("g", 16) + tok[21:], "Bearer " + tok} {
		if _, ok := ParseToken(bad); ok {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func TestKeySpecValidate(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	for _, bad := range []KeySpec{
		{Name: "", Admin: true},
		{Name: "no-acls"},
		{Name: "x", ACLs: []ACL{{ResourceType: "topic", PatternType: "literal", Name: "t"}}},
		{Name: "x", Admin: true, ExpiresAt: &past},
		{Name: "x", Admin: true, Quota: Quota{RequestsPerSec: -1}},
		{Name: "a\nb", Admin: true},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestQuotas(t *testing.T) {
	q, err := NewQuotas(DefaultQuotaConfig(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	free := &Principal{KeyID: "free", Name: "free"}
	for range 1000 {
		if _, ok := q.Admit(free); !ok {
			t.Fatal("a key without quota was throttled")
		}
	}
	p := &Principal{KeyID: "k", Name: "k", Quota: Quota{RequestsPerSec: 4, ProduceBytesPerSec: 1000}}
	// Two agents: each allows 2 requests/s, with a burst of one second.
	q.SetLiveAgents(2)
	admitted := 0
	var wait time.Duration
	for range 10 {
		w, ok := q.Admit(p)
		if ok {
			admitted++
		} else {
			wait = w
		}
	}
	if admitted != 2 || wait <= 0 || wait > time.Second {
		t.Fatalf("admitted %d of 10 at 2/s (wait %s)", admitted, wait)
	}
	// Bytes: charged after the fact; in debt, the next request waits.
	if _, ok := q.Check(p, QuotaProduce); !ok {
		t.Fatal("a fresh key is in debt")
	}
	q.Charge(p, QuotaProduce, 2000) // 500 B/s here: four seconds' worth
	w, ok := q.Check(p, QuotaProduce)
	if ok || w < 2*time.Second || w > 4*time.Second {
		t.Fatalf("after 2000 B at 500 B/s: ok %v, wait %s", ok, w)
	}
	if _, ok := q.Check(p, QuotaFetch); !ok || q.Limited(p, QuotaFetch) {
		t.Fatal("fetch has no quota")
	}
	// A stream in debt waits; it stops waiting when its request ends (with
	// the request's cause) or the agent stops (and goes on).
	if r := q.Rate(p, QuotaProduce); r != 500 {
		t.Fatalf("rate %v, want 500 B/s", r)
	}
	cause := errors.New("revoked")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	if err := q.Wait(ctx, p, QuotaProduce, nil); !errors.Is(err, cause) {
		t.Fatalf("wait with an ended request: %v", err)
	}
	stop := make(chan struct{})
	close(stop)
	if err := q.Wait(context.Background(), p, QuotaProduce, stop); err != nil {
		t.Fatalf("wait while stopping: %v", err)
	}
}

func TestLabelSetBounded(t *testing.T) {
	l := newLabelSet(2)
	if l.get("a") != "a" || l.get("b") != "b" || l.get("c") != "_other" || l.get("a") != "a" {
		t.Fatal("label set")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
