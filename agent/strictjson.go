package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"silt/problem"
)

// JSON request bodies must be I-JSON (RFC 7493) as well as JSON: UTF-8
// throughout, no object naming a member twice, no escaped lone surrogate.
// encoding/json would otherwise accept them and quietly change their
// meaning: the last duplicate wins, invalid bytes and lone surrogates
// become U+FFFD. Values stored as given (a record's key and value) are
// checked too, since a consumer's parser would face the same ambiguity;
// such bytes travel in key_b64 and value_b64.

// strictUnmarshal decodes exactly one JSON value into v, refusing unknown
// fields, and then checks that body is I-JSON. Its errors are problems
// that name the offending place in the client's terms
// (records[2].partition), never Go's types.
func strictUnmarshal(body []byte, v any) error {
	return strictUnmarshalAt(body, v, "")
}

// strictUnmarshalAt is strictUnmarshal of a value found at path root of
// the request body (such as "config"), which its messages name.
func strictUnmarshalAt(body []byte, v any, root string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(problem.CodeInvalidJSON, "%s", jsonErrorText(body, err, root))
	}
	// Not dec.More(), which is false before a '}' or ']': "{}}" would
	// pass as one value (and the I-JSON walk below then met a closer it
	// never opened; found by fuzzing).
	if len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) > 0 {
		return badRequest(problem.CodeInvalidJSON, "malformed JSON: trailing data after the value")
	}
	if err := checkIJSON(body); err != nil {
		return badRequest(problem.CodeInvalidJSON, "%v", err)
	}
	return nil
}

// jsonErrorText words a decoding error of the value at path root ("" for
// the body) for the client.
func jsonErrorText(body []byte, err error, root string) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "malformed JSON: the body is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: the body ends in the middle of a value"
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te):
		where := pathAt(body, int(te.Offset)-1)
		switch {
		case root == "" && where == "":
			where = "the body"
		case where == "":
			where = root
		case root != "":
			where = root + "." + where
		}
		return fmt.Sprintf("%s must be %s, not %s", where, jsonKind(te.Type), te.Value)
	}
	// Unknown fields and the like: encoding/json's words, without its
	// package prefix; they name no Go type.
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.Contains(msg, "Go ") {
		return "malformed JSON"
	}
	return msg
}

// jsonKind says in JSON's terms what a Go type accepts.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		bits := t.Bits()
		return fmt.Sprintf("an integer from %d to %d", int64(-1)<<(bits-1), int64(uint64(1)<<(bits-1)-1))
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		if t.Bits() == 64 {
			return fmt.Sprintf("an integer from 0 to %d", uint64(math.MaxUint64))
		}
		return fmt.Sprintf("an integer from 0 to %d", uint64(1)<<t.Bits()-1)
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another JSON value"
}

// checkIJSON reports the first place where body, valid JSON, is not
// I-JSON.
func checkIJSON(body []byte) error {
	if !utf8.Valid(body) {
		at := 0
		for at < len(body) {
			r, n := utf8.DecodeRune(body[at:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			at += n
		}
		return fmt.Errorf("invalid UTF-8 at byte %d%s; JSON text must be UTF-8", at, inPath(body, at))
	}
	var w walker
	return w.walk(body, -1)
}

// pathAt names the JSON value of body that contains byte offset at, as
// records[2].headers[0].key; "" for the top level.
func pathAt(body []byte, at int) string {
	if at < 0 || at >= len(body) {
		return ""
	}
	var w walker
	w.walk(body, at)
	return w.path
}

func inPath(body []byte, at int) string {
	if p := pathAt(body, at); p != "" {
		return " (in " + p + ")"
	}
	return ""
}

// walker walks valid JSON, keeping the path of containers it is in.
type walker struct {
	stack []frame
	path  string // set by walk when it stops at an offset
}

// frame is one open object or array.
type frame struct {
	object    bool
	index     int    // elements or members before the current one
	name      []byte // the current member's name (objects)
	expectKey bool
	names     [][]byte            // names seen, while few
	set       map[string]struct{} // names seen, once many
}

// maxLinearNames: objects with more members switch to a set.
const maxLinearNames = 16

// walk checks member names and string escapes of valid JSON b; with
// stop >= 0 it only finds the path at byte stop and returns nil.
func (w *walker) walk(b []byte, stop int) error {
	i := 0
	for i < len(b) {
		if stop >= 0 && i > stop {
			w.path = w.render(len(w.stack))
			return nil
		}
		switch c := b[i]; c {
		case ' ', '\t', '\n', '\r', ':':
			i++
		case ',':
			if top := w.top(); top != nil {
				top.index++
				top.expectKey = top.object
			}
			i++
		case '{', '[':
			if i == stop {
				w.path = w.render(len(w.stack))
				return nil
			}
			w.push(c == '{')
			i++
		case '}', ']':
			if i == stop {
				w.path = w.render(len(w.stack) - 1)
				return nil
			}
			w.stack = w.stack[:len(w.stack)-1]
			i++
		case '"':
			end, escaped, err := scanString(b, i)
			if err != nil {
				return fmt.Errorf("%v at byte %d%s", err, i, w.where())
			}
			if stop >= 0 && stop < end {
				w.path = w.render(len(w.stack))
				return nil
			}
			if top := w.top(); top != nil && top.expectKey {
				name := b[i+1 : end-1]
				if escaped {
					var s string
					if err := json.Unmarshal(b[i:end], &s); err != nil {
						return fmt.Errorf("malformed member name at byte %d", i)
					}
					name = []byte(s)
				}
				if top.seen(name) {
					return fmt.Errorf("%s names the member %q twice", w.describe(len(w.stack)), name)
				}
				top.name, top.expectKey = name, false
			}
			i = end
		default: // a number, true, false or null
			j := i
			for j < len(b) && !isDelim(b[j]) {
				j++
			}
			if stop >= 0 && stop < j {
				w.path = w.render(len(w.stack))
				return nil
			}
			i = j
		}
	}
	return nil
}

func isDelim(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

func (w *walker) top() *frame {
	if len(w.stack) == 0 {
		return nil
	}
	return &w.stack[len(w.stack)-1]
}

func (w *walker) push(object bool) {
	if len(w.stack) < cap(w.stack) {
		w.stack = w.stack[:len(w.stack)+1]
		f := &w.stack[len(w.stack)-1]
		*f = frame{object: object, expectKey: object, names: f.names[:0]}
		return
	}
	w.stack = append(w.stack, frame{object: object, expectKey: object})
}

// seen records name, reporting whether the object had it already.
func (f *frame) seen(name []byte) bool {
	if f.set != nil {
		if _, ok := f.set[string(name)]; ok {
			return true
		}
		f.set[string(name)] = struct{}{}
		return false
	}
	for _, n := range f.names {
		if bytes.Equal(n, name) {
			return true
		}
	}
	f.names = append(f.names, name)
	if len(f.names) > maxLinearNames {
		f.set = make(map[string]struct{}, 2*maxLinearNames)
		for _, n := range f.names {
			f.set[string(n)] = struct{}{}
		}
	}
	return false
}

// render is the path of the value current in the first depth frames.
func (w *walker) render(depth int) string {
	var sb strings.Builder
	for _, f := range w.stack[:depth] {
		if f.object {
			if f.expectKey {
				break
			}
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			sb.Write(f.name)
		} else {
			sb.WriteByte('[')
			sb.WriteString(strconv.Itoa(f.index))
			sb.WriteByte(']')
		}
	}
	return sb.String()
}

// describe names the container at depth for a message.
func (w *walker) describe(depth int) string {
	if p := w.render(depth - 1); p != "" {
		return "the object " + p
	}
	return "the body's object"
}

func (w *walker) where() string {
	if p := w.render(len(w.stack)); p != "" {
		return " (in " + p + ")"
	}
	return ""
}

// scanString finds the end of the string starting at b[i] (just past its
// closing quote) and checks its \u escapes: a surrogate must be half of a
// pair. escaped reports whether it has any escape.
func scanString(b []byte, i int) (end int, escaped bool, err error) {
	j := i + 1
	for j < len(b) {
		switch b[j] {
		case '"':
			return j + 1, escaped, nil
		case '\\':
			escaped = true
			if j+1 < len(b) && b[j+1] == 'u' {
				r, ok := hex4(b, j+2)
				if !ok {
					return 0, false, errors.New("malformed \\u escape")
				}
				switch {
				case utf16.IsSurrogate(r) && r < 0xdc00:
					// A high surrogate: a low one must follow.
					r2, ok2 := rune(0), false
					if j+7 < len(b) && b[j+6] == '\\' && b[j+7] == 'u' {
						r2, ok2 = hex4(b, j+8)
					}
					if !ok2 || r2 < 0xdc00 || r2 > 0xdfff {
						return 0, false, errors.New("a lone surrogate escape (\\ud800 to \\udfff without its pair) is not a character")
					}
					j += 12
				case utf16.IsSurrogate(r):
					return 0, false, errors.New("a lone surrogate escape (\\ud800 to \\udfff without its pair) is not a character")
				default:
					j += 6
				}
				continue
			}
			j += 2
		default:
			j++
		}
	}
	return 0, false, errors.New("unterminated string")
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}
