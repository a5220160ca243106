package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// sseEvent is one dispatched server-sent event.
type sseEvent struct {
	id    string
	hasID bool
	event string // "message" when the stream names none
	data  []byte
}

// sseReader parses a text/event-stream body (the WHATWG event stream
// format: lines ending in LF or CRLF, comments starting with a colon).
type sseReader struct {
	r       *bufio.Reader
	maxLine int
	// onLine is called for every line read, heartbeats included.
	onLine func()
}

var errLineTooLong = errors.New("event stream line too long")

func newSSEReader(r io.Reader, maxLine int, onLine func()) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 64<<10), maxLine: maxLine, onLine: onLine}
}

// line reads one line without its terminator. The slice is valid until
// the next read.
func (s *sseReader) line() ([]byte, error) {
	var long []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		switch {
		case err == nil:
			if long != nil {
				frag = append(long, frag...)
			}
			return bytes.TrimSuffix(frag[:len(frag)-1], []byte("\r")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, frag...)
			if len(long) > s.maxLine {
				return nil, errLineTooLong
			}
		case errors.Is(err, io.EOF) && len(long)+len(frag) > 0:
			// An unterminated last line belongs to an incomplete event.
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// next returns the next event; io.EOF when the stream ended between events.
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data bytes.Buffer
	hasData := false
	for {
		line, err := s.line()
		if err != nil {
			if err == io.EOF && (hasData || ev.hasID || ev.event != "") {
				return sseEvent{}, io.ErrUnexpectedEOF
			}
			return sseEvent{}, err
		}
		if s.onLine != nil {
			s.onLine()
		}
		if len(line) == 0 {
			if !hasData {
				ev = sseEvent{}
				continue
			}
			if ev.event == "" {
				ev.event = "message"
			}
			ev.data = bytes.TrimSuffix(data.Bytes(), []byte("\n"))
			return ev, nil
		}
		if line[0] == ':' {
			continue // comment: a heartbeat
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found {
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "data":
			data.Write(value)
			data.WriteByte('\n')
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				ev.id, ev.hasID = string(value), true
			}
		case "event":
			ev.event = string(value)
		}
	}
}
