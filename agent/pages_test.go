package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"silt/client"
	"silt/internal/agenttest"
	"silt/problem"
)

// Listings come in pages that, followed by their cursors, give every item
// once and in order; the Go client follows them.
func TestListingsArePaged(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	for i := range 5 {
		createTopic(t, a, fmt.Sprintf("t%d", i), 5, "")
	}
	follow := func(path string, items func(body []byte) []string) []string {
		t.Helper()
		var all []string
		cursor := ""
		for pages := 0; ; pages++ {
			url := a.URL + path + "?limit=2"
			if cursor != "" {
				url += "&cursor=" + cursor
			}
			status, _, b := call(t, "GET", url, "", nil)
			if status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", url, status, b)
			}
			got := items(b)
			if len(got) > 2 {
				t.Fatalf("a page of limit 2 had %d items", len(got))
			}
			all = append(all, got...)
			var next struct {
				NextCursor string `json:"next_cursor"`
			}
			_ = json.Unmarshal(b, &next)
			if next.NextCursor == "" {
				return all
			}
			if pages > 20 {
				t.Fatal("the pages never end")
			}
			cursor = next.NextCursor
		}
	}
	topics := follow("/v1/topics", func(b []byte) []string {
		var out struct{ Topics []struct{ Name string } }
		_ = json.Unmarshal(b, &out)
		var names []string
		for _, t := range out.Topics {
			names = append(names, t.Name)
		}
		return names
	})
	if fmt.Sprint(topics) != "[t0 t1 t2 t3 t4]" {
		t.Fatalf("topics over the pages: %v", topics)
	}
	parts := follow("/v1/topics/t3", func(b []byte) []string {
		var out struct {
			States []struct{ Partition int } `json:"partition_states"`
		}
		_ = json.Unmarshal(b, &out)
		var ps []string
		for _, p := range out.States {
			ps = append(ps, fmt.Sprint(p.Partition))
		}
		return ps
	})
	if fmt.Sprint(parts) != "[0 1 2 3 4]" {
		t.Fatalf("partitions over the pages: %v", parts)
	}
	waitUntil(t, func() bool { // the agent owns all 25 partitions
		owned := follow("/v1/cluster", func(b []byte) []string {
			var out struct {
				Agents []struct {
					Partitions []struct {
						Topic     string
						Partition int
					}
				}
			}
			_ = json.Unmarshal(b, &out)
			var ps []string
			for _, ag := range out.Agents {
				for _, p := range ag.Partitions {
					ps = append(ps, fmt.Sprint(p.Topic, "/", p.Partition))
				}
			}
			return ps
		})
		return len(owned) == 25 && owned[0] == "t0/0" && owned[24] == "t4/4"
	})
	c, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.DescribeTopic(context.Background(), "t1")
	if err != nil || len(d.PartitionStates) != 5 {
		t.Fatalf("client describe: %d states (%v)", len(d.PartitionStates), err)
	}
	status, hdr, b := call(t, "GET", a.URL+"/v1/topics?cursor=%25%25", "", nil)
	wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeInvalidParameter)
	status, hdr, b = call(t, "GET", a.URL+"/v1/groups?limit=0", "", nil)
	wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeInvalidParameter)
}
