package chaos

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hist builds histories with chosen times.
type hist struct {
	events []Event
	next   int64
	now    time.Duration
}

func (h *hist) tick() time.Duration { h.now += 10 * time.Millisecond; return h.now }

func (h *hist) op(inv Event, t Type, end Event) {
	h.next++
	inv.Index, inv.Type, inv.Time = h.next, Invoke, h.tick()
	h.events = append(h.events, inv)
	end.Index, end.Type, end.Time = h.next, t, h.tick()
	if end.Process == "" {
		end.Process = inv.Process
	}
	if end.F == "" {
		end.F = inv.F
	}
	if end.Group == "" {
		end.Group = inv.Group
	}
	if end.Member == "" {
		end.Member = inv.Member
	}
	h.events = append(h.events, end)
}

func (h *hist) single(t Type, e Event) {
	h.next++
	e.Index, e.Type, e.Time = h.next, t, h.tick()
	h.events = append(h.events, e)
}

// produce sends values to (partition) and, when t is OK, acknowledges
// them at offsets.
func (h *hist) produce(proc string, f F, t Type, p int32, values []string, offsets ...int64) {
	var inv, ack []Rec
	for i, v := range values {
		inv = append(inv, Rec{P: p, O: -1, V: v})
		if t == OK {
			ack = append(ack, Rec{P: p, O: offsets[i], V: v})
		}
	}
	h.op(Event{Process: proc, F: f, Records: inv}, t, Event{Records: ack})
}

func (h *hist) final(recs ...Rec) {
	hwm := map[int32]int64{0: 0, 1: 0}
	for _, r := range recs {
		hwm[r.P] = max(hwm[r.P], r.O+1)
	}
	h.op(Event{Process: "final", F: FFinalRead}, OK, Event{Records: recs, Offsets: []Offset{{0, hwm[0]}, {1, hwm[1]}}})
}

// clean is a history that breaks nothing: two producers, a group member
// that fetches and commits, a tail, a fault with its recovery.
func clean() *hist {
	h := &hist{}
	h.op(Event{Process: "nemesis", F: FFault, Fault: &FaultInfo{Kind: KAgentKill, Target: "agent1"}}, OK, Event{})
	h.single(OK, Event{Process: "nemesis", F: FRecovery, Fault: &FaultInfo{Kind: KAgentKill, Took: time.Second}})
	h.produce("plain-0", FProduce, OK, 0, []string{"a1", "a2"}, 0, 1)
	h.produce("idem-0", FIdemProduce, OK, 0, []string{"b1"}, 2)
	h.produce("plain-0", FProduce, Info, 1, []string{"a3"}) // unknown: it may be there
	h.produce("plain-0", FProduce, Fail, 1, []string{"a4"}) // refused: it must not be
	h.produce("plain-0", FProduce, Info, 1, []string{"a5"}) // unknown and absent
	h.produce("idem-0", FIdemProduce, OK, 1, []string{"b2"}, 1)
	h.op(Event{Process: "group-0", F: FGroupJoin, Group: "g"}, OK, Event{Member: "m1", Generation: 1, Offsets: []Offset{{0, 0}, {1, 0}}})
	h.op(Event{Process: "group-0", F: FGroupFetch, Group: "g", Member: "m1", Generation: 1}, OK,
		Event{Records: []Rec{{0, 0, "a1"}, {0, 1, "a2"}, {1, 0, "a3"}}, Offsets: []Offset{{0, 2}, {1, 1}}})
	h.op(Event{Process: "group-0", F: FGroupCommit, Group: "g", Member: "m1", Offsets: []Offset{{0, 2}, {1, 1}}}, OK, Event{})
	h.op(Event{Process: "group-0", F: FGroupFetch, Group: "g", Member: "m1", Generation: 1}, OK,
		Event{Records: []Rec{{0, 2, "b1"}, {1, 1, "b2"}}, Offsets: []Offset{{0, 3}, {1, 2}}})
	h.single(OK, Event{Process: "sse-0", F: FSSERead, Records: []Rec{{0, 0, "a1"}}})
	h.single(OK, Event{Process: "sse-0", F: FSSERead, Records: []Rec{{0, 1, "a2"}}})
	h.single(OK, Event{Process: "sse-0", F: FSSERead, Records: []Rec{{0, 2, "b1"}}})
	h.single(OK, Event{Process: "monitor", F: FOwners, Owners: []Owner{{"t", 0, 1, "agent1"}, {"t", 1, 1, "agent2"}}})
	h.single(OK, Event{Process: "monitor", F: FOwners, Owners: []Owner{{"t", 0, 2, "agent2"}, {"t", 1, 1, "agent2"}}})
	h.final(Rec{0, 0, "a1"}, Rec{0, 1, "a2"}, Rec{0, 2, "b1"}, Rec{1, 0, "a3"}, Rec{1, 1, "b2"})
	h.op(Event{Process: "final", F: FFinalOffsets, Group: "g"}, OK, Event{Offsets: []Offset{{0, 2}, {1, 1}}})
	return h
}

func TestCheckerPassesACleanHistory(t *testing.T) {
	v := Check(clean().events, DefaultCheckConfig())
	if !v.Valid {
		for _, x := range v.Violations {
			if x.Count > 0 {
				t.Errorf("%s: %d: %v", x.Kind, x.Count, x.Examples)
			}
		}
		t.Fatal("a clean history was judged invalid")
	}
	st := v.Stats
	if st.RecordsAcked != 4 || st.RecordsInLog != 5 || st.RecordsHanded != 5 || st.RecordsTailed != 3 || st.Faults[KAgentKill] != 1 || st.Recovery[KAgentKill].Max != time.Second {
		t.Fatalf("stats %+v", st)
	}
	if len(v.Violations) != len(Kinds) {
		t.Fatalf("%d verdicts, want one per kind (%d)", len(v.Violations), len(Kinds))
	}
}

// Each broken history must be caught by its verdict.
func TestCheckerCatchesEachViolation(t *testing.T) {
	cases := []struct {
		name   string
		want   ViolationKind
		break_ func(h *hist)
	}{
		{"an acknowledged record is missing", VLost, func(h *hist) {
			h.events = replaceFinal(h.events, func(r []Rec) []Rec { return r[:2] }) // b1 at 0@2 gone
		}},
		{"an acknowledged record holds another value", VLost, func(h *hist) {
			h.produce("plain-1", FProduce, OK, 1, []string{"c1"}, 1) // 1@1 holds b2
		}},
		{"a plain record at two offsets", VTwoOffsets, func(h *hist) {
			h.events = replaceFinal(h.events, func(r []Rec) []Rec { return append(r, Rec{1, 2, "a1"}) })
		}},
		{"an idempotent record twice", VIdemDuplicate, func(h *hist) {
			h.events = replaceFinal(h.events, func(r []Rec) []Rec { return append(r, Rec{1, 2, "b1"}) })
		}},
		{"a gap in a partition", VGap, func(h *hist) {
			h.events = replaceFinal(h.events, func(r []Rec) []Rec { r[4].O = 3; return r })
		}},
		{"a tail skips an offset", VGap, func(h *hist) {
			h.single(OK, Event{Process: "sse-1", F: FSSERead, Records: []Rec{{1, 0, "a3"}}})
			h.single(OK, Event{Process: "sse-1", F: FSSERead, Records: []Rec{{1, 2, "x"}}})
		}},
		{"a member is handed records past its position", VGap, func(h *hist) {
			h.op(Event{Process: "group-0", F: FGroupFetch, Group: "g", Member: "m1", Generation: 1}, OK,
				Event{Records: []Rec{{0, 4, "zz"}}, Offsets: []Offset{{0, 5}}})
		}},
		{"a producer's records out of order", VReorder, func(h *hist) {
			h.produce("plain-0", FProduce, OK, 0, []string{"a6"}, 0)
		}},
		{"a record never sent", VUnexplained, func(h *hist) {
			h.events = replaceFinal(h.events, func(r []Rec) []Rec { return append(r, Rec{1, 2, "ghost"}) })
		}},
		{"a refused record written", VUnexplained, func(h *hist) {
			h.events = replaceFinal(h.events, func(r []Rec) []Rec { return append(r, Rec{1, 2, "a4"}) })
		}},
		{"a read the log contradicts", VInconsistentRead, func(h *hist) {
			h.single(OK, Event{Process: "sse-1", F: FSSERead, Records: []Rec{{1, 0, "a5"}}})
		}},
		{"a commit past what was handed", VGroupSkip, func(h *hist) {
			h.op(Event{Process: "group-0", F: FGroupCommit, Group: "g", Member: "m1", Offsets: []Offset{{0, 3}, {1, 2}}}, OK, Event{})
			h.op(Event{Process: "group-0", F: FGroupCommit, Group: "g", Member: "m1", Offsets: []Offset{{1, 2}}}, OK, Event{})
			h.events = append(h.events[:0:0], h.events...)
			// move the commit before the second fetch: offsets 0@2 and 1@1 not handed yet
			h.events = moveBefore(h.events, FGroupCommit, 2, FGroupFetch, 2)
		}},
		{"a final committed offset nobody committed", VGroupSkip, func(h *hist) {
			h.op(Event{Process: "final", F: FFinalOffsets, Group: "g"}, OK, Event{Offsets: []Offset{{0, 1}}})
		}},
		{"a record reaches the group late", VStuck, func(h *hist) {
			h.produce("plain-2", FProduce, OK, 0, []string{"late"}, 3)
			h.events = replaceFinal(h.events, func(r []Rec) []Rec { return append(r, Rec{0, 3, "late"}) })
			h.now += 2 * time.Minute
			h.single(OK, Event{Process: "sse-0", F: FSSERead, Records: []Rec{{0, 3, "late"}}})
			h.op(Event{Process: "group-0", F: FGroupFetch, Group: "g", Member: "m1", Generation: 1}, OK,
				Event{Records: []Rec{{0, 3, "late"}}, Offsets: []Offset{{0, 4}}})
		}},
		{"a record never reaches the tail", VStuck, func(h *hist) {
			h.produce("plain-2", FProduce, OK, 0, []string{"d1"}, 3)
			h.events = replaceFinal(h.events, func(r []Rec) []Rec { return append(r, Rec{0, 3, "d1"}) })
			h.op(Event{Process: "group-0", F: FGroupFetch, Group: "g", Member: "m1", Generation: 1}, OK,
				Event{Records: []Rec{{0, 3, "d1"}}, Offsets: []Offset{{0, 4}}})
		}},
		{"an epoch with two owners", VSplitOwner, func(h *hist) {
			h.single(OK, Event{Process: "monitor", F: FOwners, Owners: []Owner{{"t", 0, 2, "agent3"}}})
		}},
		{"no recovery after a fault", VUnrecovered, func(h *hist) {
			h.single(Fail, Event{Process: "nemesis", F: FRecovery, Fault: &FaultInfo{Kind: KPGCrash}, Error: "agent2: readyz: 503"})
		}},
		{"an agent died on its own", VUnrecovered, func(h *hist) {
			h.single(Fail, Event{Process: "agent2", F: FAgentExit, Error: "exited"})
		}},
		{"the final read never succeeded", VUnrecovered, func(h *hist) {
			var keep []Event
			for _, e := range h.events {
				if e.F != FFinalRead {
					keep = append(keep, e)
				}
			}
			h.events = keep
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := clean()
			tc.break_(h)
			v := Check(h.events, DefaultCheckConfig())
			if v.Valid {
				t.Fatal("judged valid")
			}
			got := v.Violated(tc.want)
			if got == nil || got.Count == 0 || len(got.Examples) == 0 {
				t.Fatalf("%s not found; verdicts: %+v", tc.want, v.Violations)
			}
			t.Logf("%s: %s", tc.want, got.Examples[0])
		})
	}
}

// replaceFinal edits the final read's records.
func replaceFinal(evs []Event, f func([]Rec) []Rec) []Event {
	for i := range evs {
		if evs[i].F == FFinalRead && evs[i].Type == OK {
			evs[i].Records = f(append([]Rec(nil), evs[i].Records...))
		}
	}
	return evs
}

// moveBefore gives the n-th operation named a (its invoke and
// completion; -1: the last) the times just before the n-th completion of
// b, so that it happened first.
func moveBefore(evs []Event, a F, an int, b F, bn int) []Event {
	find := func(f F, n int) []int {
		var idx []int64
		for _, e := range evs {
			if e.F == f && e.Type == Invoke {
				idx = append(idx, e.Index)
			}
		}
		if n < 0 {
			n = len(idx) + n
		} else {
			n--
		}
		var out []int
		for i, e := range evs {
			if e.Index == idx[n] {
				out = append(out, i)
			}
		}
		return out
	}
	ai, bi := find(a, an), find(b, bn)
	t := evs[bi[0]].Time // b's invoke
	evs[ai[0]].Time, evs[ai[1]].Time = t-2*time.Microsecond, t-time.Microsecond
	return evs
}

func TestRecorderWritesReadableHistory(t *testing.T) {
	var buf bytes.Buffer
	r := NewRecorder(&buf)
	op := r.Invoke(Event{Process: "p", F: FProduce, Records: []Rec{{0, -1, "v"}}})
	op.End(OK, Event{Records: []Rec{{0, 7, "v"}}})
	r.Single(OK, Event{Process: "sse-0", F: FSSERead, Records: []Rec{{0, 7, "v"}}})
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "h.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[1].Index != evs[0].Index || evs[1].Process != "p" || evs[1].Records[0].O != 7 || evs[2].Index == evs[1].Index {
		t.Fatalf("history %+v", evs)
	}
	if !strings.Contains(buf.String(), `"type":"invoke"`) {
		t.Fatalf("history lines: %s", buf.String())
	}
}
