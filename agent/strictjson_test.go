package agent

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckIJSON(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // "" accepts; else a part of the error
	}{
		{`{"a":1,"b":[1,2,{"a":2}],"c":{"a":3}}`, ""},
		{`[{"a":1},{"a":1}]`, ""},
		{`"\ud83d\ude00 \u00e9 \\u0000 \""`, ""},
		{`{"a":1,"a":2}`, `the body's object names the member "a" twice`},
		{`{"x":[{"y":{"k":1,"k":1}}]}`, `the object x[0].y names the member "k" twice`},
		{`{"a":1,"\u0061":2}`, `names the member "a" twice`},
		{`{"a\"b":1,"a\u0022b":2}`, `names the member "a\"b" twice`},
		{`{"` + strings.Repeat(`a":0,"`, 1) + manyNames(100) + `,"n50":1}`, `names the member "n50" twice`},
		{`{"k":"\ud800"}`, `lone surrogate`},
		{`{"k":"\udfff"}`, `lone surrogate`},
		{`{"k":"\ud800\ud800"}`, `lone surrogate`},
		{`{"\ud800":1}`, `lone surrogate`},
		{`["a", "\ud800x"]`, `(in [1])`},
		{"{\"k\":\"\xff\"}", `invalid UTF-8 at byte 6 (in k)`},
		{"[1,\"\xc3\"]", `invalid UTF-8 at byte 4 (in [1])`},
	} {
		err := checkIJSON([]byte(c.in))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.in, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", c.in, err, c.want)
		}
	}
}

func manyNames(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"n`)
		b.WriteString(itoa(i))
		b.WriteString(`":0`)
	}
	return b.String()
}

func itoa(n int) string { return strings.TrimSpace(string(must(json.Marshal(n)))) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestPathAt(t *testing.T) {
	body := `{"records":[{"value":1},{"partition":1.5,"headers":[{"key":5}]}],"x":"s"}`
	for _, c := range []struct {
		at   string // the text whose last byte is asked about
		want string
	}{
		{`{"records":[{"value":1`, "records[0].value"},
		{`{"records":[{"value":1}`, "records[0]"},
		{`{"records":[{"value":1},{"partition":1.5`, "records[1].partition"},
		{`{"records":[{"value":1},{"partition":1.5,"headers":[{"key":5`, "records[1].headers[0].key"},
		{`{"records":[{"value":1},{"partition":1.5,"headers":[{"key":5}]`, "records[1].headers"},
		{`{"records":[{"value":1},{"partition":1.5,"headers":[{"key":5}]}]`, "records"},
		{`{"records":[{"value":1},{"partition":1.5,"headers":[{"key":5}]}],"x":"s"`, "x"},
		{body, ""},
	} {
		if !strings.HasPrefix(body, c.at) {
			t.Fatalf("%q is not a prefix", c.at)
		}
		if got := pathAt([]byte(body), len(c.at)-1); got != c.want {
			t.Errorf("path at %q: %q, want %q", c.at, got, c.want)
		}
	}
}

// refDuplicate finds duplicate member names with encoding/json's token
// stream, a reference for checkIJSON.
func refDuplicate(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	type obj struct {
		names map[string]bool
		key   bool
	}
	var stack []*obj
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *obj
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				if top != nil && top.names != nil {
					top.key = true
				}
				stack = append(stack, &obj{names: map[string]bool{}, key: true})
				continue
			case '[':
				if top != nil && top.names != nil {
					top.key = true
				}
				stack = append(stack, &obj{})
				continue
			default:
				stack = stack[:len(stack)-1]
				continue
			}
		case string:
			if top != nil && top.names != nil && top.key {
				if top.names[v] {
					return true
				}
				top.names[v] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.names != nil {
			top.key = true
		}
	}
}

// On valid UTF-8 JSON without escaped surrogates, checkIJSON finds a
// duplicate exactly when the reference does; pathAt never fails.
func FuzzCheckIJSON(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":{"b":1},"c":[{"b":1,"b":2}]}`, `[1,"x",{"\u0061":1,"a":2}]`, `{"records":[{"value":{"k":[1,2]},"headers":[{"key":"h"}]}]}`, `"\ud83d\ude00"`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		for i := range b {
			pathAt(b, i)
		}
		err := checkIJSON(b)
		if !utf8.Valid(b) || err != nil && strings.Contains(err.Error(), "surrogate") {
			return
		}
		if dup := refDuplicate(b); dup != (err != nil) {
			t.Fatalf("%s: reference duplicate %v, checkIJSON %v", b, dup, err)
		}
	})
}

// produceBodyOf is a JSON produce body of n records like those of bench.
func produceBodyOf(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"records":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"key":"user-`)
		b.WriteString(itoa(i))
		b.WriteString(`","value":{"amount":5,"currency":"EUR","note":"` + strings.Repeat("x", 100) + `"},"headers":[{"key":"trace","value":"abc"}]}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// The I-JSON check next to decoding: go test -bench StrictJSON ./agent/
func BenchmarkStrictJSON(b *testing.B) {
	body := produceBodyOf(20_000)
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var req produceBody
			if err := json.Unmarshal(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if err := checkIJSON(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("strictUnmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var req produceBody
			if err := strictUnmarshal(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
