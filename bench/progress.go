package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Progress prints what a run is doing: a line rewritten in place twice a
// second on a terminal, a plain line every five seconds otherwise. A nil
// *Progress prints nothing.
type Progress struct {
	w        io.Writer
	terminal bool
	mu       sync.Mutex
	liveLen  int // length of the live line on screen
	// OnPhase, when set, is called as a Silt run enters a phase
	// ("catch-up") and leaves it (""), to profile one phase alone.
	OnPhase func(phase string)
}

// phase reports a run entering (or, with "", leaving) a phase.
func (p *Progress) phase(name string) {
	if p != nil && p.OnPhase != nil {
		p.OnPhase(name)
	}
}

// NewProgress writes to w; terminal selects the live line.
func NewProgress(w io.Writer, terminal bool) *Progress {
	return &Progress{w: w, terminal: terminal}
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Logf prints a line.
func (p *Progress) Logf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *Progress) clear() {
	if p.liveLen > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.liveLen))
		p.liveLen = 0
	}
}

// Track calls status periodically and shows its line until the returned
// function is called.
func (p *Progress) Track(status func() string) (stop func()) {
	if p == nil {
		return func() {}
	}
	every := 5 * time.Second
	if p.terminal {
		every = 500 * time.Millisecond
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				line := status()
				p.mu.Lock()
				if p.terminal {
					pad := max(p.liveLen-len(line), 0)
					fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
					p.liveLen = len(line)
				} else {
					fmt.Fprintln(p.w, line)
				}
				p.mu.Unlock()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
			p.mu.Lock()
			p.clear()
			p.mu.Unlock()
		})
	}
}

// TrackCatchUp tracks a catch-up read that began at start: seconds, the
// rate since the last line and the records read so far; suffix follows
// the count (" (Kafka)", say).
func (p *Progress) TrackCatchUp(start time.Time, records *atomic.Int64, suffix string) (stop func()) {
	lastN, lastAt := int64(0), start
	return p.Track(func() string {
		n, now := records.Load(), time.Now()
		line := fmt.Sprintf("catch-up %5.0fs  %9.0f rec/s  %d records read%s", now.Sub(start).Seconds(), float64(n-lastN)/now.Sub(lastAt).Seconds(), n, suffix)
		lastN, lastAt = n, now
		return line
	})
}
