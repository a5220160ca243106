package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// ViolationKind names one way the history can break Silt's guarantees.
type ViolationKind string

// The verdicts, in the order reports list them.
const (
	VLost             ViolationKind = "lost"                 // an acknowledged record is not at its offset in the final log
	VTwoOffsets       ViolationKind = "two_offsets"          // a record (value) at more than one offset
	VIdemDuplicate    ViolationKind = "idempotent_duplicate" // an idempotent producer's record written twice
	VGap              ViolationKind = "non_contiguous"       // offsets of a partition, or of what a reader got, skip or repeat
	VReorder          ViolationKind = "reordered"            // a producer's acknowledged records out of order in a partition
	VUnexplained      ViolationKind = "unexplained"          // a record no producer sent, or one whose send certainly failed
	VInconsistentRead ViolationKind = "inconsistent_read"    // a reader got a record the final log does not hold at that offset
	VGroupSkip        ViolationKind = "group_commit_skip"    // a committed group offset past records no member was handed
	VStuck            ViolationKind = "stuck_consumer"       // an acknowledged record reached a consumer later than the bound, or never
	VSplitOwner       ViolationKind = "split_ownership"      // one partition epoch reported with two owners
	VUnrecovered      ViolationKind = "unrecovered"          // agents not serving within the bound after a fault, or an agent that died
)

// Kinds lists every verdict with its one-line meaning.
var Kinds = []struct {
	Kind  ViolationKind
	Title string
}{
	{VLost, "acknowledged records lost (not at their acknowledged offset in the final log)"},
	{VTwoOffsets, "records at two offsets"},
	{VIdemDuplicate, "duplicates from idempotent producers"},
	{VGap, "offsets not contiguous (per partition in the log, per reader in what it was handed)"},
	{VReorder, "reordering within a producer's partition"},
	{VUnexplained, "unexplained records (never sent, or sent by a request that certainly failed)"},
	{VInconsistentRead, "reads the final log contradicts (a record read at an offset that holds another, or none)"},
	{VGroupSkip, "committed group offsets that skip records no member was handed"},
	{VStuck, "consumers stuck for longer than the bound"},
	{VSplitOwner, "a partition epoch with two owners"},
	{VUnrecovered, "agents that did not recover after a fault (or died on their own)"},
}

// CheckConfig bounds the time-based verdicts.
type CheckConfig struct {
	// StuckBound: an acknowledged record must reach every consumer of its
	// partition within this long of its acknowledgement.
	StuckBound time.Duration
	// MaxExamples per verdict in the report.
	MaxExamples int
}

// DefaultCheckConfig returns the bounds the suite uses.
func DefaultCheckConfig() CheckConfig {
	return CheckConfig{StuckBound: 60 * time.Second, MaxExamples: 8}
}

// Violation is one verdict's findings.
type Violation struct {
	Kind     ViolationKind `json:"kind"`
	Title    string        `json:"title"`
	Count    int           `json:"count"`
	Examples []string      `json:"examples,omitempty"`
}

// Summary is a distribution of durations.
type Summary struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

func summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return Summary{N: len(s), P50: at(0.5), P99: at(0.99), Max: s[len(s)-1]}
}

// Stats are the figures of a run.
type Stats struct {
	// Ops counts operations by name and outcome (invoke counts every one).
	Ops           map[F]map[Type]int `json:"ops"`
	RecordsSent   int                `json:"records_sent"`
	RecordsAcked  int                `json:"records_acked"`
	RecordsInLog  int                `json:"records_in_log"`
	RecordsHanded int                `json:"records_handed_to_groups"`
	RecordsTailed int                `json:"records_received_by_tails"`
	// ResendsAnswered counts idempotent sends the agent answered as
	// resends of a committed request (the path that must not duplicate).
	ResendsAnswered int                `json:"idempotent_resends_answered"`
	Partitions      int                `json:"partitions"`
	Faults          map[Kind]int       `json:"faults"`
	Recovery        map[Kind]Summary   `json:"recovery"`
	Delivery        map[string]Summary `json:"delivery"` // per consumer: acknowledgement to receipt
	FinalReadFound  bool               `json:"final_read_found"`
}

// Verdict is the checker's answer.
type Verdict struct {
	Valid      bool        `json:"valid"`
	Violations []Violation `json:"violations"`
	Stats      Stats       `json:"stats"`
}

// Violated returns the findings of one kind.
func (v *Verdict) Violated(k ViolationKind) *Violation {
	for i := range v.Violations {
		if v.Violations[i].Kind == k {
			return &v.Violations[i]
		}
	}
	return nil
}

type checker struct {
	cfg CheckConfig
	out map[ViolationKind]*Violation
}

func (c *checker) add(k ViolationKind, format string, args ...any) {
	v := c.out[k]
	v.Count++
	if len(v.Examples) < c.cfg.MaxExamples {
		v.Examples = append(v.Examples, fmt.Sprintf(format, args...))
	}
}

// sent is what the history says about one value a producer sent.
type sent struct {
	value   string
	f       F
	process string
	op      int64
	outcome Type // "" while no completion was recorded
	p       int32
	o       int64 // acknowledged offset; -1 unless ok
	ackAt   time.Duration
	sentAt  time.Duration
}

type pos struct {
	p int32
	o int64
}

// Check judges a history.
func Check(events []Event, cfg CheckConfig) Verdict {
	if cfg.MaxExamples <= 0 {
		cfg.MaxExamples = DefaultCheckConfig().MaxExamples
	}
	if cfg.StuckBound <= 0 {
		cfg.StuckBound = DefaultCheckConfig().StuckBound
	}
	c := &checker{cfg: cfg, out: map[ViolationKind]*Violation{}}
	for _, k := range Kinds {
		c.out[k.Kind] = &Violation{Kind: k.Kind, Title: k.Title}
	}
	st := Stats{Ops: map[F]map[Type]int{}, Faults: map[Kind]int{}, Recovery: map[Kind]Summary{}, Delivery: map[string]Summary{}}
	// Completion events in time order; invokes by index.
	evs := slices.Clone(events)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time < evs[j].Time })
	invokes := map[int64]*Event{}
	for i := range evs {
		e := &evs[i]
		if st.Ops[e.F] == nil {
			st.Ops[e.F] = map[Type]int{}
		}
		st.Ops[e.F][e.Type]++
		if e.Type == Invoke {
			invokes[e.Index] = e
		}
	}

	// What producers sent, and how it ended.
	values := map[string]*sent{}
	var order []*sent // in invoke order
	for i := range evs {
		e := &evs[i]
		if (e.F != FProduce && e.F != FIdemProduce) || e.Type != Invoke {
			continue
		}
		for _, r := range e.Records {
			s := &sent{value: r.V, f: e.F, process: e.Process, op: e.Index, p: r.P, o: -1, sentAt: e.Time}
			if _, dup := values[r.V]; dup {
				c.add(VUnexplained, "value %q was sent twice by the workload (a harness bug)", r.V)
				continue
			}
			values[r.V] = s
			order = append(order, s)
			st.RecordsSent++
		}
	}
	for i := range evs {
		e := &evs[i]
		if (e.F != FProduce && e.F != FIdemProduce) || e.Type == Invoke {
			continue
		}
		inv := invokes[e.Index]
		if inv == nil {
			continue
		}
		for j, r := range inv.Records {
			s := values[r.V]
			if s == nil || s.op != e.Index {
				continue
			}
			s.outcome = e.Type
			if j == 0 && e.Type == OK && e.Duplicate {
				st.ResendsAnswered++
			}
			if e.Type == OK {
				if j >= len(e.Records) {
					c.add(VLost, "%s op %d: acknowledged without an offset for %q", e.Process, e.Index, r.V)
					continue
				}
				s.p, s.o, s.ackAt = e.Records[j].P, e.Records[j].O, e.Time
				st.RecordsAcked++
			}
		}
	}

	// The final log.
	var final *Event
	for i := range evs {
		if evs[i].F == FFinalRead && evs[i].Type == OK {
			final = &evs[i]
		}
	}
	logAt := map[pos]string{}
	where := map[string][]pos{}
	hwm := map[int32]int64{}
	if final == nil {
		c.add(VUnrecovered, "the final read of the log never succeeded: the cluster did not serve reads after the faults ended")
	} else {
		st.FinalReadFound = true
		byP := map[int32][]Rec{}
		for _, r := range final.Records {
			byP[r.P] = append(byP[r.P], r)
		}
		st.Partitions = len(final.Offsets)
		for _, o := range final.Offsets { // high watermarks
			hwm[o.P] = o.O
		}
		for p, rs := range byP {
			sort.Slice(rs, func(i, j int) bool { return rs[i].O < rs[j].O })
			next := int64(0)
			for _, r := range rs {
				switch {
				case r.O > next:
					c.add(VGap, "partition %d: the log skips offsets %d to %d (next record at %d)", p, next, r.O-1, r.O)
				case r.O < next:
					c.add(VGap, "partition %d: offset %d read twice (%q)", p, r.O, r.V)
				}
				next = r.O + 1
				logAt[pos{p, r.O}] = r.V
				where[r.V] = append(where[r.V], pos{p, r.O})
				st.RecordsInLog++
			}
			if h, ok := hwm[p]; ok && next != h {
				c.add(VGap, "partition %d: records end at offset %d but the high watermark is %d", p, next, h)
			}
		}
		for p, h := range hwm {
			if len(byP[p]) == 0 && h > 0 {
				c.add(VGap, "partition %d: high watermark %d but no records read", p, h)
			}
		}

		// Lost, moved, duplicated, unexplained.
		for _, s := range order {
			at := where[s.value]
			if s.outcome == OK {
				if got, ok := logAt[pos{s.p, s.o}]; !ok || got != s.value {
					c.add(VLost, "%s: %q acknowledged at %d@%d (%s) is %s; the log holds %s there", s.process, s.value, s.p, s.o,
						fmtAt(s.ackAt), describeAt(at), describeValue(got, ok))
				}
			}
			if len(at) > 1 {
				k := VTwoOffsets
				if s.f == FIdemProduce {
					k = VIdemDuplicate
				}
				c.add(k, "%s: %q (%s) is %s", s.process, s.value, s.outcome, describeAt(at))
			}
			if s.outcome == Fail && len(at) > 0 {
				c.add(VUnexplained, "%s: %q was refused (a certain failure) yet is %s", s.process, s.value, describeAt(at))
			}
		}
		for v, at := range where {
			if values[v] == nil {
				c.add(VUnexplained, "%q %s was never sent", v, describeAt(at))
			}
		}
	}

	// Order of each producer's acknowledged records per partition.
	last := map[string]map[int32]*sent{}
	for _, s := range order {
		if s.outcome != OK {
			continue
		}
		if last[s.process] == nil {
			last[s.process] = map[int32]*sent{}
		}
		if prev := last[s.process][s.p]; prev != nil && s.o <= prev.o {
			c.add(VReorder, "%s, partition %d: %q sent after %q got offset %d, not after %d", s.process, s.p, s.value, prev.value, s.o, prev.o)
		}
		last[s.process][s.p] = s
	}

	c.checkReads(evs, values, logAt, &st)
	c.checkGroups(evs, invokes, values, hwm, &st)
	c.checkTails(evs, values, &st)
	c.checkOwners(evs)

	// Faults and recovery.
	rec := map[Kind][]time.Duration{}
	for i := range evs {
		e := &evs[i]
		switch {
		case e.F == FFault && e.Type == Invoke && e.Fault != nil:
			st.Faults[e.Fault.Kind]++
		case e.F == FRecovery && e.Fault != nil && e.Type == OK:
			rec[e.Fault.Kind] = append(rec[e.Fault.Kind], e.Fault.Took)
		case e.F == FRecovery && e.Type != OK:
			what := "the end of the faults"
			if e.Fault != nil {
				what = fmt.Sprintf("%s on %s (%s)", e.Fault.Kind, e.Fault.Target, e.Fault.Params)
			}
			c.add(VUnrecovered, "after %s, at %s: %s", what, fmtAt(e.Time), e.Error)
		case e.F == FAgentExit:
			c.add(VUnrecovered, "%s exited on its own at %s: %s", e.Process, fmtAt(e.Time), e.Error)
		}
	}
	for k, ds := range rec {
		st.Recovery[k] = summarize(ds)
	}

	v := Verdict{Valid: true, Stats: st}
	for _, k := range Kinds {
		viol := c.out[k.Kind]
		if viol.Count > 0 {
			v.Valid = false
		}
		v.Violations = append(v.Violations, *viol)
	}
	return v
}

// checkReads compares every record a reader got with the final log.
func (c *checker) checkReads(evs []Event, values map[string]*sent, logAt map[pos]string, st *Stats) {
	if len(logAt) == 0 && st.RecordsInLog == 0 && !st.FinalReadFound {
		return
	}
	seen := map[string]bool{}
	for i := range evs {
		e := &evs[i]
		if e.Type != OK || (e.F != FGroupFetch && e.F != FSSERead) {
			continue
		}
		for _, r := range e.Records {
			if got, ok := logAt[pos{r.P, r.O}]; !ok || got != r.V {
				c.add(VInconsistentRead, "%s read %q at %d@%d (%s); the final log holds %s there", e.Process, r.V, r.P, r.O, fmtAt(e.Time), describeValue(got, ok))
			}
			if values[r.V] == nil && !seen[r.V] {
				seen[r.V] = true
				c.add(VUnexplained, "%s read %q at %d@%d, which was never sent", e.Process, r.V, r.P, r.O)
			}
		}
	}
}

// checkGroups checks each consumer group: members are handed contiguous
// records from their positions, commits never pass what some member was
// handed, the final committed offsets are ones a member committed, and
// acknowledged records reach the group within the bound.
func (c *checker) checkGroups(evs []Event, invokes map[int64]*Event, values map[string]*sent, hwm map[int32]int64, st *Stats) {
	type group struct {
		handed    map[int32]map[int64]bool
		prefix    map[int32]int64 // every offset below was handed
		firstSeen map[pos]time.Duration
		committed map[int32]map[int64]bool // offsets members tried to commit
		final     []Offset
		hasFinal  bool
		reported  map[pos]bool
	}
	groups := map[string]*group{}
	get := func(name string) *group {
		g := groups[name]
		if g == nil {
			g = &group{handed: map[int32]map[int64]bool{}, prefix: map[int32]int64{}, firstSeen: map[pos]time.Duration{}, committed: map[int32]map[int64]bool{}, reported: map[pos]bool{}}
			groups[name] = g
		}
		return g
	}
	// positions per member process, reset by joins
	positions := map[string]map[int32]int64{}
	for i := range evs {
		e := &evs[i]
		switch {
		case e.F == FGroupJoin && e.Type == OK:
			m := map[int32]int64{}
			for _, o := range e.Offsets {
				m[o.P] = o.O
			}
			positions[e.Process] = m
		case e.F == FGroupJoin || e.F == FGroupLeave || (e.F == FGroupFetch && e.Type != OK && e.Type != Invoke):
			// After a failed fetch the member rejoins before fetching
			// again: positions are unknown until then.
			if e.Type != Invoke {
				delete(positions, e.Process)
			}
		case e.F == FGroupFetch && e.Type == OK:
			g := get(e.Group)
			byP := map[int32][]Rec{}
			for _, r := range e.Records {
				byP[r.P] = append(byP[r.P], r)
			}
			m := positions[e.Process]
			for p, rs := range byP {
				want, known := int64(0), false
				if m != nil {
					want, known = m[p]
				}
				for _, r := range rs {
					if known && r.O != want {
						c.add(VGap, "%s (member %s, generation %d) was handed %d@%d after position %d (%s)", e.Process, short(e.Member), e.Generation, r.P, r.O, want, fmtAt(e.Time))
					}
					want, known = r.O+1, true
					if g.handed[p] == nil {
						g.handed[p] = map[int64]bool{}
					}
					if !g.handed[p][r.O] {
						g.handed[p][r.O] = true
						g.firstSeen[pos{p, r.O}] = e.Time
						st.RecordsHanded++
					}
				}
				for g.handed[p][g.prefix[p]] {
					g.prefix[p]++
				}
				if m != nil {
					m[p] = want
				}
			}
			if m != nil {
				for _, o := range e.Offsets { // positions the agent reports
					if _, ok := byP[o.P]; !ok {
						if cur, known := m[o.P]; known && cur != o.O {
							c.add(VGap, "%s (member %s) position of partition %d moved from %d to %d without records (%s)", e.Process, short(e.Member), o.P, cur, o.O, fmtAt(e.Time))
						}
						m[o.P] = o.O
					}
				}
			}
		case e.F == FGroupCommit && e.Type == Invoke:
			g := get(e.Group)
			for _, o := range e.Offsets {
				if g.committed[o.P] == nil {
					g.committed[o.P] = map[int64]bool{}
				}
				g.committed[o.P][o.O] = true
			}
		case e.F == FGroupCommit && e.Type == OK:
			g := get(e.Group)
			inv := invokes[e.Index]
			if inv == nil {
				continue
			}
			for _, o := range inv.Offsets {
				if o.O > g.prefix[o.P] && !g.reported[pos{o.P, g.prefix[o.P]}] {
					// One finding per record skipped, not per later commit.
					g.reported[pos{o.P, g.prefix[o.P]}] = true
					c.add(VGroupSkip, "%s (member %s) committed %d@%d at %s, but offset %d was never handed to any member", e.Process, short(e.Member), o.P, o.O, fmtAt(e.Time), g.prefix[o.P])
				}
			}
		case e.F == FFinalOffsets && e.Type == OK:
			g := get(e.Group)
			g.final, g.hasFinal = e.Offsets, true
		}
	}
	for name, g := range groups {
		for _, o := range g.final {
			if o.O < 0 {
				continue
			}
			if !g.committed[o.P][o.O] {
				c.add(VGroupSkip, "group %s: final committed offset %d@%d is no offset a member committed", name, o.P, o.O)
			}
			if o.O > g.prefix[o.P] {
				c.add(VGroupSkip, "group %s: final committed offset %d@%d passes offset %d, which no member was handed", name, o.P, o.O, g.prefix[o.P])
			}
		}
		// Delivery: every acknowledged record reaches the group.
		var ds []time.Duration
		worst := map[int32]time.Duration{}
		for _, s := range values {
			if s.outcome != OK {
				continue
			}
			if _, ok := hwm[s.p]; !ok && len(hwm) > 0 {
				continue
			}
			t, ok := g.firstSeen[pos{s.p, s.o}]
			if !ok {
				c.add(VStuck, "group %s: %q acknowledged at %d@%d (%s) was never handed to a member", name, s.value, s.p, s.o, fmtAt(s.ackAt))
				continue
			}
			d := max(0, t-s.ackAt)
			ds = append(ds, d)
			if d > c.cfg.StuckBound && d > worst[s.p] {
				worst[s.p] = d
			}
		}
		for p, d := range worst {
			c.add(VStuck, "group %s: partition %d: a record reached the group %s after its acknowledgement (bound %s)", name, p, d.Round(time.Millisecond), c.cfg.StuckBound)
		}
		st.Delivery["group "+name] = summarize(ds)
	}
}

// checkTails checks each SSE tail: it gets its partition's records in
// offset order without gaps, from the offset it started at, and every
// acknowledged record within the bound.
func (c *checker) checkTails(evs []Event, values map[string]*sent, st *Stats) {
	type tail struct {
		p      int32
		first  int64
		next   int64
		got    map[int64]time.Duration
		active bool
	}
	tails := map[string]*tail{}
	var names []string
	for i := range evs {
		e := &evs[i]
		if e.F != FSSERead || e.Type != OK || len(e.Records) == 0 {
			continue
		}
		r := e.Records[0]
		t := tails[e.Process]
		if t == nil {
			t = &tail{p: r.P, first: r.O, next: r.O, got: map[int64]time.Duration{}}
			tails[e.Process] = t
			names = append(names, e.Process)
		}
		if r.O != t.next {
			c.add(VGap, "%s got %d@%d after %d@%d (%s)", e.Process, r.P, r.O, r.P, t.next-1, fmtAt(e.Time))
		}
		t.next = r.O + 1
		if _, ok := t.got[r.O]; !ok {
			t.got[r.O] = e.Time
			st.RecordsTailed++
		}
	}
	for _, name := range names {
		t := tails[name]
		var ds []time.Duration
		var worst time.Duration
		for _, s := range values {
			if s.outcome != OK || s.p != t.p || s.o < t.first {
				continue
			}
			at, ok := t.got[s.o]
			if !ok {
				c.add(VStuck, "%s: %q acknowledged at %d@%d (%s) never arrived", name, s.value, s.p, s.o, fmtAt(s.ackAt))
				continue
			}
			d := max(0, at-s.ackAt)
			ds = append(ds, d)
			worst = max(worst, d)
		}
		if worst > c.cfg.StuckBound {
			c.add(VStuck, "%s: a record arrived %s after its acknowledgement (bound %s)", name, worst.Round(time.Millisecond), c.cfg.StuckBound)
		}
		st.Delivery[name] = summarize(ds)
	}
}

// checkOwners checks that no partition epoch was reported with two owners.
func (c *checker) checkOwners(evs []Event) {
	owner := map[string]string{}
	for i := range evs {
		e := &evs[i]
		if e.F != FOwners || e.Type != OK {
			continue
		}
		for _, o := range e.Owners {
			k := fmt.Sprintf("%s/%d epoch %d", o.Topic, o.P, o.Epoch)
			if prev, ok := owner[k]; ok && prev != o.Agent {
				c.add(VSplitOwner, "%s owned by %s and by %s (%s)", k, prev, o.Agent, fmtAt(e.Time))
			}
			owner[k] = o.Agent
		}
	}
}

func fmtAt(d time.Duration) string { return "t=" + d.Round(time.Millisecond).String() }

func describeAt(at []pos) string {
	if len(at) == 0 {
		return "nowhere in the log"
	}
	parts := make([]string, len(at))
	for i, a := range at {
		parts[i] = fmt.Sprintf("%d@%d", a.p, a.o)
	}
	return "at " + strings.Join(parts, ", ")
}

func describeValue(v string, ok bool) string {
	if !ok {
		return "no record"
	}
	return fmt.Sprintf("%q", v)
}

func short(member string) string {
	if len(member) > 10 {
		return member[:10] + "…"
	}
	return member
}
