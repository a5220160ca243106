package agent

import "testing"

// A paced stream writes whole events only, as many as fit a slice, or the
// first one whole when it alone is larger.
func TestEventsPrefix(t *testing.T) {
	events := "id: 1\n\nid: 2\n\nid: 3\n\n" // 7 bytes each
	for _, c := range []struct {
		in    string
		limit int
		want  int
	}{
		{events, 100, 21},
		{events, 21, 21},
		{events, 20, 14},
		{events, 14, 14},
		{events, 13, 7},
		{events, 3, 7}, // the first event is larger than the slice
		{"no end of event", 3, 15},
		{"a\n\nbbbbbbbbbb", 5, 3},
	} {
		if got := eventsPrefix([]byte(c.in), c.limit); got != c.want {
			t.Errorf("eventsPrefix(%q, %d) = %d, want %d", c.in, c.limit, got, c.want)
		}
	}
}
