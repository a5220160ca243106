package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"silt/internal/agenttest"
	"silt/problem"
)

// Producer timestamps are bounded per topic, as in Kafka: a record too far
// in the past or the future is refused; under LogAppendTime every record
// gets the agent's time.
func TestProduceTimestampBounds(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	createTopic(t, a, "bounded", 1, `{"message.timestamp.before.max.ms":60000,"message.timestamp.after.max.ms":1000}`)
	createTopic(t, a, "appended", 1, `{"message.timestamp.type":"LogAppendTime"}`)
	now := time.Now().UnixMilli()
	produce := func(topic string, ts int64) (int, []byte) {
		status, hdr, b := call(t, "POST", a.URL+"/v1/topics/"+topic+"/records", "application/json",
			[]byte(fmt.Sprintf(`{"records":[{"value":"v","timestamp":%d}]}`, ts)))
		if status != http.StatusOK {
			wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeInvalidTimestamp)
		}
		return status, b
	}
	for name, tc := range map[string]struct {
		ts   int64
		want int
	}{
		"within":           {now - 30_000, http.StatusOK},
		"too old":          {now - 120_000, http.StatusBadRequest},
		"too far ahead":    {now + 3_600_000, http.StatusBadRequest},
		"far in the past":  {1, http.StatusBadRequest},
		"a little ahead":   {now + 500, http.StatusOK},
		"a year in future": {now + 365*24*3_600_000, http.StatusBadRequest},
	} {
		if status, b := produce("bounded", tc.ts); status != tc.want {
			t.Errorf("%s: %d %s, want %d", name, status, b, tc.want)
		}
	}
	if status, b := produce("appended", 1); status != http.StatusOK {
		t.Fatalf("LogAppendTime refused an old timestamp: %d %s", status, b)
	}
	status, _, b := call(t, "GET", a.URL+"/v1/topics/appended/partitions/0/records?offset=0", "", nil)
	var got struct {
		Records []struct {
			Timestamp int64 `json:"timestamp"`
		} `json:"records"`
	}
	if status != http.StatusOK || json.Unmarshal(b, &got) != nil || len(got.Records) != 1 || got.Records[0].Timestamp < now {
		t.Fatalf("LogAppendTime record: %d %s", status, b)
	}
}
