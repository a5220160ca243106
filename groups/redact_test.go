package groups

import (
	"fmt"
	"strings"
	"testing"
)

func TestRedactMemberIDs(t *testing.T) {
	id := newMemberID()
	got := RedactMemberIDs(fmt.Sprintf("member %s and %s, not m-short", id, id))
	if strings.Contains(got, id) || got != fmt.Sprintf("member %s… and %s…, not m-short", id[:8], id[:8]) {
		t.Fatalf("redacted %q", got)
	}
	if err := ValidMemberID(id); err != nil {
		t.Fatalf("an issued id is invalid: %v", err)
	}
}
