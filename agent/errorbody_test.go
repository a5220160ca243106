package agent_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"silt/agent"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/objectstore/file"
	"silt/problem"
	"silt/recordjson"
)

// 503 bodies say which dependency failed and nothing more: the file
// object store's errors name absolute paths, which stay in the logs.
func TestUnavailableBodiesCarryNoPaths(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "bucket")
	cfg := file.DefaultConfig()
	cfg.Root, cfg.Create = root, true
	bucket, err := file.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// No object cache: the agent would serve its own flush from memory
	// (Fetcher.Seed), and this test needs the read to reach the store.
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: func(c *agentd.Config) { c.Fetch.ObjectCacheBytes = 0 }})
	createTopic(t, a, "t", 1, "")
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`1`)}}})
	var seg string
	if err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".seg") {
			seg = path
		}
		return err
	}); err != nil || seg == "" {
		t.Fatalf("no segment under %s: %v", root, err)
	}
	noPaths := func(what string, status int, hdr http.Header, body []byte) {
		t.Helper()
		wantProblem(t, status, hdr, body, http.StatusServiceUnavailable, problem.CodeUnavailable)
		if strings.Contains(string(body), root) || strings.Contains(string(body), ".seg") || strings.Contains(string(body), "/tmp") {
			t.Fatalf("%s: the 503 body names files: %s", what, body)
		}
	}

	// A read that fails: the segment is a directory now.
	if err := os.Rename(seg, seg+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(seg, 0o755); err != nil {
		t.Fatal(err)
	}
	status, hdr, body := call(t, "GET", a.URL+"/v1/topics/t/partitions/0/records?offset=0", "", nil)
	noPaths("fetch", status, hdr, body)

	// A write that fails: where segment directories go is a file.
	segments := filepath.Join(root, "segments")
	if err := os.Rename(segments, segments+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(segments, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	status, hdr, body = call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", []byte(`{"records":[{"value":2}]}`))
	noPaths("produce", status, hdr, body)
}
