package agent_test

import (
	"net/http"
	"testing"

	"silt/internal/agenttest"
	"silt/problem"
)

// Conditional appends: written at the expected offset, refused with the
// next offset otherwise, and refused as bad input when malformed.
func TestProduceExpectedOffset(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	createTopic(t, a, "cas", 2, "")
	url := a.URL + "/v1/topics/cas/partitions/1/records"
	rec := []byte(`{"records":[{"value":"a"},{"value":"b"}]}`)
	if status, _, b := call(t, "POST", url+"?expected_offset=0", "application/json", rec); status != http.StatusOK {
		t.Fatalf("at 0: %d %s", status, b)
	}
	status, hdr, b := call(t, "POST", url+"?expected_offset=0", "application/json", rec)
	p := wantProblem(t, status, hdr, b, http.StatusConflict, problem.CodeOffsetMismatch)
	if p.NextOffset == nil || *p.NextOffset != 2 {
		t.Fatalf("mismatch without the next offset: %s", b)
	}
	// The body's field works as the query parameter does.
	if status, _, b := call(t, "POST", url, "application/json", []byte(`{"expected_offset":2,"records":[{"value":"c"}]}`)); status != http.StatusOK {
		t.Fatalf("at 2 in the body: %d %s", status, b)
	}
	for name, tc := range map[string]struct {
		url, body string
	}{
		"negative":             {url + "?expected_offset=-1", string(rec)},
		"not a number":         {url + "?expected_offset=x", string(rec)},
		"query and body":       {url + "?expected_offset=3", `{"expected_offset":4,"records":[{"value":"c"}]}`},
		"several partitions":   {a.URL + "/v1/topics/cas/records?expected_offset=0", `{"records":[{"value":"a","partition":0},{"value":"b","partition":1}]}`},
		"negative in the body": {url, `{"expected_offset":-2,"records":[{"value":"c"}]}`},
	} {
		status, hdr, b := call(t, "POST", tc.url, "application/json", []byte(tc.body))
		if status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", name, status, b)
			continue
		}
		wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeInvalidParameter)
	}
}
