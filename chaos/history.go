package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Type is what an event says about its operation: it began (invoke), or
// it ended with an outcome. An operation's invoke and completion share
// its Index.
type Type string

const (
	Invoke Type = "invoke"
	// OK: the operation happened, with the results in the event.
	OK Type = "ok"
	// Fail: the operation certainly did not happen (the agent refused it
	// before buffering anything: 4xx, 429).
	Fail Type = "fail"
	// Info: the outcome is unknown (a timeout, a dropped connection, a
	// 5xx after the records may have been committed).
	Info Type = "info"
)

// F names an operation.
type F string

const (
	FProduce      F = "produce"       // a plain producer's request (no retries)
	FIdemProduce  F = "idem_produce"  // an idempotent producer's Send (retried through other agents)
	FGroupJoin    F = "group_join"    // join or rejoin of a consumer group
	FGroupFetch   F = "group_fetch"   // records handed to a member
	FGroupCommit  F = "group_commit"  // a member's offset commit
	FGroupLeave   F = "group_leave"   // a member left
	FSSERead      F = "sse_read"      // a record an SSE tail received (single ok event)
	FFault        F = "fault"         // invoke: injected; ok: healed
	FRecovery     F = "recovery"      // ok: every agent serves again; fail: not within the bound
	FAgentExit    F = "agent_exit"    // an agent exited without being told to (always a violation)
	FOwners       F = "owners"        // an observation of partition owners and epochs
	FFinalRead    F = "final_read"    // the whole log, read after the faults ended
	FFinalOffsets F = "final_offsets" // the group's committed offsets at the end
)

// Rec is a record in an event: partition, offset (-1 when not known yet)
// and value.
type Rec struct {
	P int32  `json:"p"`
	O int64  `json:"o"`
	V string `json:"v"`
}

// Offset is a group offset (committed, or a member's position); -1 means
// none committed.
type Offset struct {
	P int32 `json:"p"`
	O int64 `json:"o"`
}

// Owner is one partition's owner and lease epoch as an agent reported it.
type Owner struct {
	Topic string `json:"topic"`
	P     int32  `json:"p"`
	Epoch int64  `json:"epoch"`
	Agent string `json:"agent"`
}

// FaultInfo describes an injected fault.
type FaultInfo struct {
	Kind   Kind          `json:"kind"`
	Target string        `json:"target,omitempty"` // an agent id, "all", "postgres", "minio"
	Params string        `json:"params,omitempty"` // toxic attributes, pause length
	Took   time.Duration `json:"took_ns,omitempty"`
}

// Event is one line of the history.
type Event struct {
	Index      int64         `json:"index"`
	Type       Type          `json:"type"`
	Process    string        `json:"process"`
	F          F             `json:"f"`
	Time       time.Duration `json:"time_ns"` // since the run began
	Records    []Rec         `json:"records,omitempty"`
	Offsets    []Offset      `json:"offsets,omitempty"`
	Group      string        `json:"group,omitempty"`
	Member     string        `json:"member,omitempty"`
	Generation int64         `json:"generation,omitempty"`
	Duplicate  bool          `json:"duplicate,omitempty"`
	Status     int           `json:"status,omitempty"`
	Code       string        `json:"code,omitempty"`
	Error      string        `json:"error,omitempty"`
	Fault      *FaultInfo    `json:"fault,omitempty"`
	Owners     []Owner       `json:"owners,omitempty"`
}

// Recorder collects the history, safe for concurrent use. With a writer it
// also streams every event as a JSON line, so that a run that dies leaves
// its history behind.
type Recorder struct {
	start time.Time

	mu     sync.Mutex
	next   int64
	events []Event
	w      *bufio.Writer
	err    error
}

// NewRecorder starts a history now; w may be nil.
func NewRecorder(w io.Writer) *Recorder {
	r := &Recorder{start: time.Now()}
	if w != nil {
		r.w = bufio.NewWriterSize(w, 1<<16)
	}
	return r
}

// Since is the time since the history began.
func (r *Recorder) Since() time.Duration { return time.Since(r.start) }

// Op is an operation in flight.
type Op struct {
	r     *Recorder
	index int64
	ev    Event
}

// Invoke records the start of an operation. e's Index, Type and Time are
// filled in.
func (r *Recorder) Invoke(e Event) *Op {
	r.mu.Lock()
	r.next++
	e.Index, e.Type = r.next, Invoke
	r.mu.Unlock()
	e.Time = r.Since()
	r.add(e)
	return &Op{r: r, index: e.Index, ev: Event{Process: e.Process, F: e.F, Group: e.Group, Member: e.Member, Generation: e.Generation, Fault: e.Fault}}
}

// End records the operation's outcome. Fields of e left empty take those
// of the invoke (process, f, group, member, generation, fault).
func (o *Op) End(t Type, e Event) {
	e.Index, e.Type, e.Time = o.index, t, o.r.Since()
	if e.Process == "" {
		e.Process = o.ev.Process
	}
	if e.F == "" {
		e.F = o.ev.F
	}
	if e.Group == "" {
		e.Group = o.ev.Group
	}
	if e.Member == "" {
		e.Member = o.ev.Member
	}
	if e.Generation == 0 {
		e.Generation = o.ev.Generation
	}
	if e.Fault == nil {
		e.Fault = o.ev.Fault
	}
	o.r.add(e)
}

// Single records an operation that has no separate start (a record an SSE
// tail received, an observation): one event of type t.
func (r *Recorder) Single(t Type, e Event) {
	r.mu.Lock()
	r.next++
	e.Index = r.next
	r.mu.Unlock()
	e.Type, e.Time = t, r.Since()
	r.add(e)
}

func (r *Recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	if r.w != nil && r.err == nil {
		b, err := json.Marshal(e)
		if err == nil {
			b = append(b, '\n')
			_, err = r.w.Write(b)
		}
		r.err = err
	}
}

// Events returns a copy of the history so far, in the order recorded.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Flush writes buffered lines out and returns the first write error.
func (r *Recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil && r.err == nil {
		r.err = r.w.Flush()
	}
	return r.err
}

// ReadHistory reads a history written by a Recorder (JSON lines).
func ReadHistory(path string) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("chaos: open history: %w", err)
	}
	defer f.Close()
	var out []Event
	dec := json.NewDecoder(bufio.NewReaderSize(f, 1<<16))
	for dec.More() {
		var e Event
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("chaos: history %s event %d: %w", path, len(out)+1, err)
		}
		out = append(out, e)
	}
	return out, nil
}
