package recordjson

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestEncodeDecodeKeepBytes(t *testing.T) {
	cases := [][]byte{
		nil, {}, []byte(`{"a":1}`), []byte(`"user-1"`), []byte(`42`), []byte(` 42`), []byte(`{"a": 1}`),
		[]byte("plain text"), {0xff, 0xfe}, []byte(`"\xff"`), []byte(`"a b"`), []byte("null"),
	}
	for _, in := range cases {
		raw, b64 := Encode(in)
		// Through a JSON round trip, as on the wire.
		wire, err := json.Marshal(Record{Key: raw, KeyB64: b64})
		if err != nil {
			t.Fatal(err)
		}
		var got Record
		if err := json.Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		out, err := Decode("key", got.Key, got.KeyB64)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !bytes.Equal(out, in) || (out == nil) != (in == nil) {
			t.Errorf("%q came back as %q", in, out)
		}
	}
}

func TestAsText(t *testing.T) {
	for in, want := range map[string]bool{
		`{"a":1}`: true, `"a b"`: true, `[1,2]`: true, `{"a": 1}`: false, ` 1`: false,
		"\"\xff\"": false, ``: false, `null`: false, `{`: false, `nope`: false,
	} {
		if got := AsText([]byte(in)); got != want {
			t.Errorf("AsText(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestDecodeProduceForms(t *testing.T) {
	b64 := "AAE="
	if _, err := Decode("key", json.RawMessage(`1`), &b64); err == nil {
		t.Fatal("both forms accepted")
	}
	bad := "!!"
	if _, err := Decode("header value", nil, &bad); err == nil || !bytes.Contains([]byte(err.Error()), []byte("header_value_b64")) {
		t.Fatalf("bad base64: %v", err)
	}
	got, err := Decode("value", json.RawMessage("{ \"a\" : [1, 2] }"), nil)
	if err != nil || string(got) != `{"a":[1,2]}` {
		t.Fatalf("compacted %q, %v", got, err)
	}
	if got, _ := Decode("value", json.RawMessage("null"), nil); got != nil {
		t.Fatal("null is not nil")
	}
}
