package partitioner

import "testing"

// Vectors from Kafka's own UtilsTest and from other Kafka clients' tests of
// the same function.
func TestMurmur2MatchesKafka(t *testing.T) {
	cases := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc":   479470107,
		"1":     -1993445489,
		"12":    126087238,
		"123":   -267702483,
		"1234":  -1614185708,
		"12345": -1188365604,
	}
	for in, want := range cases {
		if got := Murmur2([]byte(in)); got != want {
			t.Errorf("Murmur2(%q) = %d, want %d", in, got, want)
		}
	}
}

// toPositive(murmur2(key)) % n, as Kafka's BuiltInPartitioner computes it.
func TestForKey(t *testing.T) {
	cases := []struct {
		key  string
		n    int32
		want int32
	}{
		{"21", 10, (-973932308 & 0x7fffffff) % 10},
		{"foobar", 3, (-790332482 & 0x7fffffff) % 3},
		{"abc", 7, 479470107 % 7},
		{"12345", 1000, (-1188365604 & 0x7fffffff) % 1000},
	}
	for _, c := range cases {
		if got := ForKey([]byte(c.key), c.n); got != c.want {
			t.Errorf("ForKey(%q, %d) = %d, want %d", c.key, c.n, got, c.want)
		}
		if got := ForKey([]byte(c.key), c.n); got < 0 || got >= c.n {
			t.Errorf("ForKey(%q, %d) = %d out of range", c.key, c.n, got)
		}
	}
}

func TestStickyRoundRobin(t *testing.T) {
	var s Sticky
	seen := map[int32]int{}
	for i := 0; i < 12; i++ {
		seen[s.Next(4)]++
	}
	for p := int32(0); p < 4; p++ {
		if seen[p] != 3 {
			t.Fatalf("partition %d chosen %d times of 12, want 3: %v", p, seen[p], seen)
		}
	}
}
