package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Valid reports whether the run broke nothing: the verdict and the
// overload test, when it ran.
func (r *Result) Valid() bool {
	return r.Verdict.Valid && (r.Overload == nil || r.Overload.Valid)
}

// Write stores the result as verdict.json and verdict.md in dir.
func (r *Result) Write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("chaos: encode verdict: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "verdict.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("chaos: write verdict: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "verdict.md"), []byte(r.Markdown()), 0o644); err != nil {
		return fmt.Errorf("chaos: write verdict: %w", err)
	}
	return nil
}

func ms(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.Round(time.Millisecond).String()
}

// Markdown renders the result for people.
func (r *Result) Markdown() string {
	var b strings.Builder
	v := &r.Verdict
	verdict := "PASS"
	if !r.Valid() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "# Chaos run: %s\n\n", verdict)
	fmt.Fprintf(&b, "Seed `%d` (repeat with `make chaos CHAOS_SEED=%d CHAOS_DURATION=%s`), fault phase %s, run time %s.\n\n",
		r.Seed, r.Seed, r.Duration, r.Duration, r.Elapsed.Round(time.Second))

	b.WriteString("## Verdicts\n\n| verdict | count |\n|---|---|\n")
	for _, x := range v.Violations {
		mark := "ok"
		if x.Count > 0 {
			mark = fmt.Sprintf("**%d**", x.Count)
		}
		fmt.Fprintf(&b, "| %s (`%s`) | %s |\n", x.Title, x.Kind, mark)
	}
	for _, x := range v.Violations {
		if x.Count == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n### %s: %d\n\n", x.Kind, x.Count)
		for _, e := range x.Examples {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}

	st := &v.Stats
	b.WriteString("\n## Operations\n\n| operation | invoked | ok | failed | unknown |\n|---|---|---|---|---|\n")
	var fs []F
	for f := range st.Ops {
		fs = append(fs, f)
	}
	slices.Sort(fs)
	for _, f := range fs {
		o := st.Ops[f]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d |\n", f, o[Invoke], o[OK], o[Fail], o[Info])
	}
	fmt.Fprintf(&b, "\nRecords: %d sent, %d acknowledged, %d in the final log over %d partitions; %d handed to consumer groups (each group counted), %d received by SSE tails. Idempotent sends answered as resends of a committed request: %d.\n",
		st.RecordsSent, st.RecordsAcked, st.RecordsInLog, st.Partitions, st.RecordsHanded, st.RecordsTailed, st.ResendsAnswered)

	b.WriteString("\n## Faults and recovery\n\nRecovery: from healing the fault (restart, SIGCONT, toxic removed, standby promoted) until every agent answers `/readyz` and acknowledges a write of its own.\n\n| fault | injected | recovery p50 | recovery max |\n|---|---|---|---|\n")
	for _, k := range AllKinds {
		n := st.Faults[k]
		if n == 0 {
			continue
		}
		s := st.Recovery[k]
		fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", k, n, ms(s.P50), ms(s.Max))
	}
	b.WriteString("\n## Delivery (acknowledgement to consumer)\n\n| consumer | records | p50 | p99 | max |\n|---|---|---|---|---|\n")
	var cs []string
	for c := range st.Delivery {
		cs = append(cs, c)
	}
	slices.Sort(cs)
	for _, c := range cs {
		s := st.Delivery[c]
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", c, s.N, ms(s.P50), ms(s.P99), ms(s.Max))
	}

	if o := r.Overload; o != nil {
		b.WriteString("\n## Overload\n\n")
		status := "PASS"
		if !o.Valid {
			status = "FAIL"
		}
		fmt.Fprintf(&b, "%s. Capacity %.0f requests/s (%.1f MB/s), offered %.0f requests/s open loop: %d sent, %d acknowledged, %d refused with 429 (%d without Retry-After), %d other statuses, %d without an answer, %d not sent (generator bound). Max RSS %d MiB of a %d MiB memory setting; crashed: %v. Throughput back to capacity %s after the load dropped.\n",
			status, o.Capacity, o.CapacityMBps, o.Offered, o.Sent, o.Acked, o.Refused, o.NoRetryAfter, sumStatus(o.OtherStatus), o.TransportErrors, o.ClientDropped,
			o.MaxRSS>>20, o.Memory>>20, o.Crashed, ms(o.RecoveryTime))
		if o.FreshCapacity > 0 {
			fmt.Fprintf(&b, "Throughput did not come back to the capacity measured before; a fresh agent measured then did %.0f requests/s, the machine's capacity at that time, and recovery is judged against the lower of the two.\n", o.FreshCapacity)
		}
		for _, x := range o.Violations {
			fmt.Fprintf(&b, "- %s\n", x)
		}
	}

	b.WriteString("\n## Fault schedule\n\n")
	for i, s := range r.Steps {
		fmt.Fprintf(&b, "%d. %s\n", i+1, s)
	}
	return b.String()
}

func sumStatus(m map[int]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
