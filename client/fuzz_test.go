package client

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

// The event stream parser that carries the ids a Stream resumes from
// (Last-Event-ID): on any input it ends with io.EOF or an error, never
// returns a line longer than its bound, and reads back exactly the events
// an agent writes.
func FuzzSSEReader(f *testing.F) {
	for _, s := range []string{
		"id: 41\nevent: record\ndata: {\"offset\":41}\n\n: keepalive\n\n",
		"data: a\r\ndata: b\r\n\r\n",
		"id\nid: 1\x002\ndata\n\n",
		"event: end\ndata: {}\n\n",
		"data: x",
		":\n\n\n",
		"retry: 10\nfoo: bar\ndata:x\n\n",
	} {
		f.Add([]byte(s), int64(3), "v")
	}
	f.Fuzz(func(t *testing.T, stream []byte, id int64, value string) {
		const maxLine = 1 << 10
		r := newSSEReader(bytes.NewReader(stream), maxLine, nil)
		for range len(stream) + 1 {
			ev, err := r.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errLineTooLong) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(ev.data) > len(stream) || len(ev.id) > maxLine || strings.ContainsRune(ev.id, 0) {
				t.Fatalf("event %+v from %d bytes", ev, len(stream))
			}
		}
		// An event as the agent writes it reads back as it was.
		if id < 0 || strings.ContainsAny(value, "\r\n") {
			return
		}
		var b bytes.Buffer
		b.WriteString(": comment\n\nid: " + strconv.FormatInt(id, 10) + "\nevent: record\ndata: " + value + "\n\n")
		ev, err := newSSEReader(&b, 1<<20, nil).next()
		if err != nil || !ev.hasID || ev.id != strconv.FormatInt(id, 10) || ev.event != "record" || string(ev.data) != value {
			t.Fatalf("event with id %d and data %q read back as %+v, %v", id, value, ev, err)
		}
	})
}
