package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"silt/groups"
	"silt/metadata"
)

// failingGroups fails every heartbeat as Postgres being away would, with
// the member id in the error's chain.
type failingGroups struct{ GroupCoordinator }

func (failingGroups) Heartbeat(_ context.Context, group, member string, _ int64) (groups.HeartbeatResult, error) {
	return groups.HeartbeatResult{}, fmt.Errorf("heartbeat of group %q member %q: %w", group, member, metadata.ErrUnavailable)
}

// A member id authorizes the member's commits and fetches: the agent's
// logs carry it shortened, in the path and in the error alike.
func TestLogsShortenMemberIDs(t *testing.T) {
	var logs bytes.Buffer
	cfg := DefaultConfig()
	cfg.Auth = AuthNone
	s, err := New(cfg, Deps{Groups: failingGroups{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	const id = "m-01jq5x7k2m3n4p5q6r7s8t9v0w"
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/v1/groups/g/members/"+id+"/heartbeat", strings.NewReader(`{"generation":1}`))
	req.Header.Set("Content-Type", "application/json")
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if strings.Contains(logs.String(), id) || !strings.Contains(logs.String(), "m-01jq5x…") || !strings.Contains(logs.String(), "request failed") {
		t.Fatalf("logs:\n%s", logs.String())
	}
	if strings.Contains(rec.Body.String(), "heartbeat of group") {
		t.Fatalf("a 503 body carries the error chain: %s", rec.Body)
	}
}
