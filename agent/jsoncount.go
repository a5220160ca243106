package agent

import (
	"bytes"
	"encoding/json"
)

// jsonCounts is what a JSON produce body holds, counted before decoding.
type jsonCounts struct {
	records, headers int
	// over is the index of the first record with more headers than
	// allowed, or -1; counting stops there.
	over int
}

// JSON roles of the containers countJSON walks through.
const (
	roleOther   = iota
	roleRoot    // the body's object
	roleRecords // its "records" array
	roleRecord  // a record object
	roleHeaders // a record's "headers" array
)

type jsonFrame struct {
	obj       bool
	expectKey bool  // in an object: the next string is a key
	role      uint8 // of this container
	key       uint8 // in an object: the role the current key gives its value
}

// maxJSONDepth is encoding/json's nesting limit: past it the decoder
// fails, so counting can stop.
const maxJSONDepth = 10000

// countJSON counts the records of a JSON produce body, or of one NDJSON
// line (line: the root object is the record), and their headers, without
// allocating per record or header, so that a record of a million headers
// is refused before any of them exists. It stops at the first record with
// more than maxHeaders headers. Keys match as encoding/json matches them
// (case-insensitively, escapes decoded). On invalid JSON the counts mean
// nothing; the decoder that follows reports the error.
func countJSON(b []byte, line bool, maxHeaders int) jsonCounts {
	out := jsonCounts{over: -1}
	stack := make([]jsonFrame, 0, 8)
	cur := 0 // headers of the current record
	// value notes the start of a value in the innermost container.
	value := func() bool {
		if len(stack) == 0 {
			return true
		}
		switch stack[len(stack)-1].role {
		case roleRecords:
			out.records++
			cur = 0
		case roleHeaders:
			out.headers++
			cur++
			if cur > maxHeaders {
				out.over = out.records - 1
				return false
			}
		}
		return true
	}
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case ' ', '\t', '\r', '\n', ':':
		case ',':
			if n := len(stack); n > 0 && stack[n-1].obj {
				stack[n-1].expectKey = true
			}
		case '{', '[':
			if !value() || len(stack) >= maxJSONDepth {
				return out
			}
			role := uint8(roleOther)
			if n := len(stack); n == 0 {
				role = roleRoot
				if line {
					role = roleRecord
					out.records++
				}
			} else {
				switch top := stack[n-1]; {
				case top.obj && top.role == roleRoot && top.key == roleRecords && c == '[':
					role = roleRecords
				case !top.obj && top.role == roleRecords && c == '{':
					role = roleRecord
				case top.obj && top.role == roleRecord && top.key == roleHeaders && c == '[':
					role = roleHeaders
				}
			}
			stack = append(stack, jsonFrame{obj: c == '{', expectKey: c == '{', role: role})
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case '"':
			end := stringEnd(b, i)
			if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].expectKey {
				stack[n-1].key = keyRole(b[i+1 : max(end, i+1)])
				stack[n-1].expectKey = false
			} else if !value() {
				return out
			}
			if end < 0 {
				return out
			}
			i = end
		default: // a number, true, false or null
			if !value() {
				return out
			}
			for i+1 < len(b) && !endsScalar(b[i+1]) {
				i++
			}
		}
	}
	return out
}

func endsScalar(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', ',', ':', ']', '}':
		return true
	}
	return false
}

// stringEnd returns the index of the quote closing the string that opens
// at b[i], or -1.
func stringEnd(b []byte, i int) int {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		j += k
		escapes := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			escapes++
		}
		if escapes%2 == 0 {
			return j
		}
		j++
	}
}

// keyRole is the role a key gives its value: "records" or "headers" as
// encoding/json would match them to the fields.
func keyRole(key []byte) uint8 {
	if bytes.IndexByte(key, '\\') >= 0 {
		if len(key) > 64 {
			return roleOther
		}
		var s string
		if json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &s) != nil {
			return roleOther
		}
		key = []byte(s)
	}
	switch {
	case bytes.EqualFold(key, []byte("records")):
		return roleRecords
	case bytes.EqualFold(key, []byte("headers")):
		return roleHeaders
	}
	return roleOther
}
