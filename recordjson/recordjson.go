// Package recordjson is the JSON form of records in Silt's HTTP API, shared
// by the agent and the client, with the rules that keep bytes exact: a key,
// value or header value travels as JSON text when its bytes are compact,
// valid UTF-8 JSON, and as standard base64 (the _b64 fields) otherwise;
// absent or null means null.
package recordjson

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Record is a record in JSON produce requests, NDJSON lines and fetch
// responses.
type Record struct {
	Partition *int32          `json:"partition,omitempty"`
	Offset    *int64          `json:"offset,omitempty"`
	Timestamp *int64          `json:"timestamp,omitempty"`
	Key       json.RawMessage `json:"key,omitempty"`
	KeyB64    *string         `json:"key_b64,omitempty"`
	Value     json.RawMessage `json:"value,omitempty"`
	ValueB64  *string         `json:"value_b64,omitempty"`
	Headers   []Header        `json:"headers,omitempty"`
}

// Header is a record header, with the same value encodings.
type Header struct {
	Key      string          `json:"key"`
	Value    json.RawMessage `json:"value,omitempty"`
	ValueB64 *string         `json:"value_b64,omitempty"`
}

// AsText reports whether b can travel as JSON text: one valid JSON value,
// valid UTF-8, with no insignificant white space, so that written raw its
// bytes survive exactly; and not null, which would read back as null.
func AsText(b []byte) bool {
	if len(b) == 0 || string(b) == "null" || !utf8.Valid(b) || !json.Valid(b) {
		return false
	}
	if !hasSpace(b) {
		return true
	}
	var buf bytes.Buffer
	buf.Grow(len(b))
	if json.Compact(&buf, b) != nil {
		return false
	}
	return bytes.Equal(buf.Bytes(), b)
}

// Encode returns the JSON form of b that carries exactly b: the JSON text
// itself when AsText, else base64. nil stays absent (null).
func Encode(b []byte) (json.RawMessage, *string) {
	if b == nil {
		return nil, nil
	}
	if AsText(b) {
		return json.RawMessage(b), nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return nil, &s
}

// Decode returns the bytes that raw (JSON text, compacted) or b64 carry;
// nil when both are absent or raw is null. field names the field in
// errors ("key", "value", "header value").
func Decode(field string, raw json.RawMessage, b64 *string) ([]byte, error) {
	name := strings.ReplaceAll(field, " ", "_")
	if b64 != nil {
		if len(raw) > 0 && string(raw) != "null" {
			return nil, fmt.Errorf("%s and %s_b64 are both set", name, name)
		}
		b, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			return nil, fmt.Errorf("%s_b64 is not valid base64: %v", name, err)
		}
		return b, nil
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if !hasSpace(raw) {
		// Already compact. json.RawMessage holds a private copy of what
		// it decoded, so it can be kept as it is.
		return raw, nil
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("%s: %v", field, err)
	}
	return buf.Bytes(), nil
}

// hasSpace reports whether b holds a byte JSON may treat as white space.
func hasSpace(b []byte) bool {
	return bytes.ContainsAny(b, " \t\r\n")
}
