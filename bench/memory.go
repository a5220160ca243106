package bench

import (
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MemoryFigures are the agent's peak memory over a run (produce and
// catch-up). An agent of this process shares it with the load generator:
// its figures are the process's, both together.
type MemoryFigures struct {
	// Source is "in-process" (the agent and the load generator, read from
	// the runtime and /proc/self) or "scraped" (the agent's
	// process_resident_memory_bytes, from its /metrics).
	Source string `json:"source"`
	// PeakRSS is the largest resident memory sampled.
	PeakRSS int64 `json:"peak_rss_bytes"`
	// HWM is the process's VmHWM at the end of the run, its resident
	// memory's high-water mark since the run began (in-process only).
	HWM int64 `json:"vm_hwm_bytes,omitempty"`
	// GoPeak is the largest memory the Go runtime held (mapped and not
	// returned: what its soft limit counts) among the samples
	// (in-process only).
	GoPeak int64 `json:"go_runtime_peak_bytes,omitempty"`
	// LivePeak is the largest live heap among the samples: what the last
	// collection found in use (in-process only). Under a soft memory
	// limit the others sit near the limit; this is what the work needed.
	LivePeak int64   `json:"go_live_heap_peak_bytes,omitempty"`
	Samples  int     `json:"samples"`
	Every    float64 `json:"sample_every_seconds"`
}

// memoryWatch samples memory until stopped.
type memoryWatch struct {
	mu    sync.Mutex
	f     MemoryFigures
	local bool
	stop  chan struct{}
	done  chan struct{}
}

// watchMemory samples the memory of t's agent: this process's when the
// agent runs here (every 100 ms), its process_resident_memory_bytes
// otherwise (every second, a scrape of /metrics).
func watchMemory(t *Target) *memoryWatch {
	w := &memoryWatch{local: t.Local(), stop: make(chan struct{}), done: make(chan struct{})}
	every := time.Second
	w.f.Source = "scraped"
	if w.local {
		every, w.f.Source = 100*time.Millisecond, "in-process"
		resetHWM()
	}
	w.f.Every = every.Seconds()
	metricsOf := t.Metrics
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			w.sample(metricsOf)
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *memoryWatch) sample(g Gatherer) {
	var rss, goMem, live int64
	if w.local {
		rss, _ = procSelfStatus("VmRSS:")
		goMem, live = runtimeMemory()
	} else if g != nil {
		rss = residentMemory(g)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if rss > 0 {
		w.f.Samples++
	}
	w.f.PeakRSS = max(w.f.PeakRSS, rss)
	w.f.GoPeak = max(w.f.GoPeak, goMem)
	w.f.LivePeak = max(w.f.LivePeak, live)
}

// halt stops sampling and returns the figures; nil when no sample came.
func (w *memoryWatch) halt() *MemoryFigures {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.f
	if w.local {
		f.HWM, _ = procSelfStatus("VmHWM:")
		f.PeakRSS = max(f.PeakRSS, f.HWM)
	}
	if f.Samples == 0 {
		return nil
	}
	return &f
}

// residentMemory reads process_resident_memory_bytes from g (0 when it
// fails or lacks it).
func residentMemory(g Gatherer) int64 {
	fams, err := g.Gather()
	if err != nil {
		return 0
	}
	for _, f := range fams {
		if f.GetName() == "process_resident_memory_bytes" {
			for _, m := range f.GetMetric() {
				return int64(m.GetGauge().GetValue())
			}
		}
	}
	return 0
}

// runtimeMemory is what the Go runtime holds from the OS (all it mapped
// less what it returned, which its soft memory limit bounds) and the live
// heap the last collection found.
func runtimeMemory() (held, live int64) {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	for _, v := range s {
		if v.Value.Kind() != metrics.KindUint64 {
			return 0, 0
		}
	}
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64()), int64(s[2].Value.Uint64())
}

// resetHWM restarts this process's VmHWM from its current RSS (Linux:
// writing 5 to clear_refs), so that the figure covers this run alone.
func resetHWM() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// procSelfStatus reads a kB field of /proc/self/status, in bytes.
func procSelfStatus(field string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}

// Table renders the figures.
func (m *MemoryFigures) Table() *Table {
	if m.Source == "in-process" {
		t := &Table{Title: "Memory over the run (in-process: the agent and the load generator share the process)", Head: []string{"", "value"}}
		t.add(fmt.Sprintf("resident memory peak (VmRSS every %.1f s, and VmHWM)", m.Every), fMiB(m.PeakRSS))
		t.add("VmHWM at the end of the run", fMiB(m.HWM))
		t.add("Go runtime peak (mapped, not returned)", fMiB(m.GoPeak))
		t.add("live heap peak (after a collection)", fMiB(m.LivePeak))
		return t
	}
	t := &Table{Title: "Agent memory over the run (its process_resident_memory_bytes, scraped)", Head: []string{"", "value"}}
	t.add(fmt.Sprintf("resident memory peak (%d samples, every %.0f s)", m.Samples, m.Every), fMiB(m.PeakRSS))
	return t
}

func fMiB(n int64) string { return f1(float64(n)/(1<<20)) + " MiB" }
