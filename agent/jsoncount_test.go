package agent

import (
	"encoding/json"
	"strings"
	"testing"
)

// reference counts with encoding/json, which maps keys as the produce
// decoder does (a repeated key keeps the last value; countJSON counts
// both, which only errs on the safe side).
func referenceCounts(t *testing.T, b []byte, line bool) (records, headers int, ok bool) {
	type rec struct {
		Headers []json.RawMessage
	}
	if line {
		var r rec
		if json.Unmarshal(b, &r) != nil {
			return 0, 0, false
		}
		return 1, len(r.Headers), true
	}
	var body struct{ Records []rec }
	if json.Unmarshal(b, &body) != nil {
		return 0, 0, false
	}
	for _, r := range body.Records {
		headers += len(r.Headers)
	}
	return len(body.Records), headers, true
}

func TestCountJSON(t *testing.T) {
	for _, c := range []struct {
		body             string
		line             bool
		records, headers int
		maxHeaders, over int
	}{
		{`{"records":[{"value":1,"headers":[{"key":"a"},{"key":"b"}]},{"headers":[]},{}]}`, false, 3, 2, 10, -1},
		{`{"records":[{"value":{"headers":[1,2,3]},"headers":[{"key":"a"}]}]}`, false, 1, 1, 10, -1},
		{`{"RECORDS":[{"Headers":[{"key":"a"},{"key":"b"},{"key":"c"}]}]}`, false, 1, 3, 2, 0},
		{`{"rec\u006frds":[{"head\u0065rs":[{"key":"\"headers\""},{}]},{"headers":[{},{},{}]}]}`, false, 2, 5, 2, 1},
		{`{"key":"\\","value":"x\"y","headers":[{"key":"","value":[1,{"a":"]"}]},{"key":"h"}]}`, true, 1, 2, 10, -1},
		{`{"headerſ":[{},{}]}`, true, 1, 2, 10, -1}, // ſ folds to s, as encoding/json matches it
		{`{"records":{"headers":[1,2]},"headers":[1]}`, false, 0, 0, 10, -1},
		{"{\"records\" : [ { \"headers\" : [ {} , {} ] } ] }", false, 1, 2, 1, 0},
	} {
		got := countJSON([]byte(c.body), c.line, c.maxHeaders)
		if got.over != c.over || (c.over < 0 && (got.records != c.records || got.headers != c.headers)) {
			t.Errorf("%s: got %+v, want %d records, %d headers, over %d", c.body, got, c.records, c.headers, c.over)
		}
		if c.over < 0 {
			if r, h, ok := referenceCounts(t, []byte(c.body), c.line); ok && (r != got.records || h != got.headers) {
				t.Errorf("%s: encoding/json counts %d records, %d headers (ok %v)", c.body, r, h, ok)
			}
		}
	}
	// Deep nesting stops the count; it never recurses.
	deep := strings.Repeat("[", 1<<20)
	if got := countJSON([]byte(deep), false, 10); got.records != 0 {
		t.Fatalf("deep nesting: %+v", got)
	}
}

// On any valid JSON, countJSON counts at least what encoding/json decodes.
func FuzzCountJSON(f *testing.F) {
	f.Add([]byte(`{"records":[{"value":1,"headers":[{"key":"a"},{"key":"b"}]},{"headers":[]},{}]}`), false)
	f.Add([]byte(`{"rec\u006frds":[{"HEADERS":[{"key":"\"x\\"}]}]}`), false)
	f.Add([]byte(`{"key":"k","headers":[{"key":"a","value":{"headers":[1]}}]}`), true)
	f.Fuzz(func(t *testing.T, b []byte, line bool) {
		got := countJSON(b, line, 1<<30)
		r, h, ok := referenceCounts(t, b, line)
		if !ok {
			return
		}
		if got.records < r || got.headers < h || got.over != -1 {
			t.Fatalf("%q: counted %+v, encoding/json %d records, %d headers", b, got, r, h)
		}
	})
}
