package bench

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// Every value starts with the time it was (meant to be) sent, in Unix
// nanoseconds, big-endian: consumers compute end-to-end latency from it.
// The rest is random bytes, which no compressor shrinks, or log-like text.
const sendTimeBytes = 8

// sendTime reads the send time of a value written by a generator; ok is
// false for a value too short to carry one.
func sendTime(v []byte) (t int64, ok bool) {
	if len(v) < sendTimeBytes {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

// textPool is shared log-like text from which text values are cut at
// random offsets: copying is cheap enough not to slow the load generator,
// and the text compresses like real logs (about 3:1 with zstd).
var (
	textPoolOnce sync.Once
	textPool     []byte
)

const textPoolBytes = 16 << 20

var (
	words = []string{"GET", "POST", "PUT", "DELETE", "/api/v1/orders", "/api/v1/users", "/api/v1/cart",
		"/healthz", "/api/v2/search", "/api/v1/payments", "checkout", "inventory", "billing", "gateway",
		"auth", "frontend", "info", "warn", "error", "debug", "timeout", "retry", "cache", "miss", "hit",
		"user", "session", "order", "item", "payment", "refund", "shipped", "created", "updated",
		"deleted", "eu-west-1", "us-east-1", "ap-south-1", "Mozilla/5.0", "curl/8.5", "okhttp/4.12"}
	levels   = []string{"info", "info", "info", "info", "warn", "error", "debug"}
	services = []string{"checkout", "inventory", "billing", "gateway", "auth", "frontend", "search"}
)

func buildTextPool() {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 0, textPoolBytes+512)
	for len(b) < textPoolBytes {
		b = append(b, `{"ts":"2026-02-12T`...)
		b = appendPadded(b, r.IntN(24), 2)
		b = append(b, ':')
		b = appendPadded(b, r.IntN(60), 2)
		b = append(b, ':')
		b = appendPadded(b, r.IntN(60), 2)
		b = append(b, '.')
		b = appendPadded(b, r.IntN(1000000), 6)
		b = append(b, `Z","level":"`...)
		b = append(b, levels[r.IntN(len(levels))]...)
		b = append(b, `","service":"`...)
		b = append(b, services[r.IntN(len(services))]...)
		b = append(b, `","trace_id":"`...)
		for range 16 {
			b = append(b, "0123456789abcdef"[r.IntN(16)])
		}
		b = append(b, `","user":"u`...)
		b = strconv.AppendInt(b, int64(r.IntN(1_000_000)), 10)
		b = append(b, `","status":`...)
		b = strconv.AppendInt(b, int64([]int{200, 200, 200, 201, 204, 400, 404, 500}[r.IntN(8)]), 10)
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendFloat(b, r.ExpFloat64()*20, 'f', 3, 64)
		b = append(b, `,"msg":"`...)
		for i := range 4 + r.IntN(8) {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, words[r.IntN(len(words))]...)
		}
		b = append(b, "\"}\n"...)
	}
	textPool = b
}

func appendPadded(b []byte, n, width int) []byte {
	s := strconv.Itoa(n)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// generator makes record keys and values. One per goroutine.
type generator struct {
	opts  Options
	bytes *rand.PCG  // random value bytes: cheap, and no compressor shrinks them
	r     *rand.Rand // keys, text offsets
	arena []byte     // values and keys of the batch being built
}

func newGenerator(o Options) *generator {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	le := binary.LittleEndian
	g := &generator{opts: o, bytes: rand.NewPCG(le.Uint64(seed[16:]), le.Uint64(seed[24:]))}
	g.r = rand.New(rand.NewPCG(le.Uint64(seed[:8]), le.Uint64(seed[8:16])))
	if o.Values == ValuesText {
		textPoolOnce.Do(buildTextPool)
	}
	return g
}

// reset starts a new batch; slices from earlier batches are reused.
func (g *generator) reset(records int) {
	keyBytes := 0
	if g.opts.Keys.Kind != KeysNone {
		keyBytes = 24
	}
	need := records * (g.opts.RecordSize + keyBytes)
	if cap(g.arena) < need {
		g.arena = make([]byte, 0, need)
	}
	g.arena = g.arena[:0]
}

// value returns a fresh value carrying sent.
func (g *generator) value(sent time.Time) []byte {
	n := g.opts.RecordSize
	start := len(g.arena)
	g.arena = g.arena[:start+n]
	v := g.arena[start : start+n : start+n]
	binary.BigEndian.PutUint64(v, uint64(sent.UnixNano()))
	body := v[sendTimeBytes:]
	if g.opts.Values == ValuesText {
		off := g.r.IntN(len(textPool) - len(body))
		copy(body, textPool[off:])
	} else {
		fillRandom(g.bytes, body)
	}
	return v
}

// key returns the next record's key, or nil.
func (g *generator) key() []byte {
	switch g.opts.Keys.Kind {
	case KeysRandom:
		start := len(g.arena)
		g.arena = append(g.arena, "k-"...)
		for range 14 {
			g.arena = append(g.arena, "0123456789abcdef"[g.r.IntN(16)])
		}
		return g.arena[start:len(g.arena):len(g.arena)]
	case KeysUniform:
		start := len(g.arena)
		g.arena = append(g.arena, "key-"...)
		g.arena = strconv.AppendInt(g.arena, int64(g.r.IntN(g.opts.Keys.N)), 10)
		return g.arena[start:len(g.arena):len(g.arena)]
	}
	return nil
}

// fillRandom fills b from src, eight bytes per step.
func fillRandom(src *rand.PCG, b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], src.Uint64())
	}
	if i < len(b) {
		var last [8]byte
		binary.LittleEndian.PutUint64(last[:], src.Uint64())
		copy(b[i:], last[:])
	}
}
