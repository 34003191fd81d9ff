package bench

import (
	"math"
	"math/rand/v2"
	"strconv"
)

// The compressible part of a disk is what file systems mostly hold besides
// media and encrypted data: prose, logs and structured records. A fixed
// pseudo-language (the same for every seed, like a real language) gives
// them words that repeat with a Zipf distribution, so an LZ compressor
// finds what it finds on real text; the numbers, times and identifiers in
// the records keep them from compressing too well.

// vocabulary is the pseudo-language: words built from syllables, most
// frequent first, and a table that draws a word index with a Zipf
// distribution from 16 random bits.
type vocabulary struct {
	words []string
	zipf  [1 << 16]uint16
}

var lang = newVocabulary(4096, 0x5eed_1a6e)

func newVocabulary(n int, seed uint64) *vocabulary {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	onsets := []string{"", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w",
		"br", "ch", "cl", "cr", "dr", "fl", "gr", "pl", "pr", "sh", "sl", "sp", "st", "th", "tr", "wh"}
	nuclei := []string{"a", "e", "i", "o", "u", "a", "e", "i", "o", "ea", "ou", "ai", "io", "ee", "y"}
	codas := []string{"", "", "", "n", "r", "s", "t", "l", "d", "m", "ng", "st", "nt", "rd", "ck", "ss"}
	v := &vocabulary{}
	seen := map[string]bool{}
	for len(v.words) < n {
		// Frequent words are short, as in natural languages.
		syl := 1 + len(v.words)*3/n + rng.IntN(2)
		w := ""
		for range syl {
			w += onsets[rng.IntN(len(onsets))] + nuclei[rng.IntN(len(nuclei))] + codas[rng.IntN(len(codas))]
		}
		if !seen[w] {
			seen[w] = true
			v.words = append(v.words, w)
		}
	}
	// Zipf weights 1/(rank+2.7), the usual fit of word frequencies.
	cum := make([]float64, n)
	total := 0.0
	for r := range n {
		total += 1 / (float64(r) + 2.7)
		cum[r] = total
	}
	r := 0
	for i := range v.zipf {
		p := (float64(i) + 0.5) / float64(len(v.zipf)) * total
		for r < n-1 && cum[r] < p {
			r++
		}
		v.zipf[i] = uint16(r)
	}
	return v
}

// word draws a word.
func (v *vocabulary) word(rng *rand.Rand) string {
	return v.words[v.zipf[rng.Uint32()&0xffff]]
}

// textStyle is one kind of compressible content.
type textStyle int

const (
	styleProse textStyle = iota
	styleLog
	styleRecords
)

// fillText fills dst with compressible content drawn from rng: a run of
// one style, as a file of one kind would hold.
func fillText(dst []byte, rng *rand.Rand) {
	g := textGen{rng: rng, buf: dst[:0:len(dst)], max: len(dst)}
	// Half prose, the rest logs and records: about 3x with zstd at its
	// fastest over a stream, 2.8x in 64 KiB pieces.
	style := styleProse
	switch r := rng.IntN(10); {
	case r >= 8:
		style = styleRecords
	case r >= 5:
		style = styleLog
	}
	g.t = 1_700_000_000_000 + rng.Int64N(200_000_000_000)
	for len(g.buf) < g.max {
		switch style {
		case styleProse:
			g.paragraph()
		case styleLog:
			g.logLine()
		case styleRecords:
			g.record()
		}
	}
	copy(dst, g.buf[:g.max])
}

// textGen appends text to buf until it holds at least max bytes (the
// caller cuts the excess, so buf needs room for one more line).
type textGen struct {
	rng *rand.Rand
	buf []byte
	max int
	t   int64 // milliseconds since the epoch, for logs
}

func (g *textGen) add(s string) { g.buf = append(g.buf, s...) }

func (g *textGen) num(n int64) { g.buf = strconv.AppendInt(g.buf, n, 10) }

func (g *textGen) paragraph() {
	sentences := 2 + g.rng.IntN(6)
	for range sentences {
		n := 5 + g.rng.IntN(16)
		for i := range n {
			w := lang.word(g.rng)
			if i == 0 && w != "" {
				g.buf = append(g.buf, w[0]-'a'+'A')
				g.add(w[1:])
			} else {
				g.add(w)
			}
			switch {
			case i == n-1:
				g.add(". ")
			case g.rng.IntN(9) == 0:
				g.add(", ")
			default:
				g.add(" ")
			}
		}
	}
	g.add("\n\n")
}

var (
	logLevels     = []string{"INFO ", "INFO ", "INFO ", "DEBUG", "DEBUG", "WARN ", "ERROR"}
	logComponents = []string{"auth", "api", "db.pool", "scheduler", "cache", "http", "worker", "mailer",
		"billing", "search", "storage", "session", "queue", "metrics", "backup", "sync"}
)

// logLine appends a line of an application log.
func (g *textGen) logLine() {
	g.t += int64(g.rng.ExpFloat64() * 40)
	sec, ms := g.t/1000, g.t%1000
	day := sec / 86400
	s := sec % 86400
	g.add("2025-")
	g.pad(1+day%12, 2)
	g.add("-")
	g.pad(1+day%28, 2)
	g.add("T")
	g.pad(s/3600, 2)
	g.add(":")
	g.pad(s/60%60, 2)
	g.add(":")
	g.pad(s%60, 2)
	g.add(".")
	g.pad(ms, 3)
	g.add("Z ")
	g.add(logLevels[g.rng.IntN(len(logLevels))])
	g.add(" [")
	g.add(logComponents[g.rng.IntN(len(logComponents))])
	g.add("] ")
	for i := range 3 + g.rng.IntN(6) {
		if i > 0 {
			g.add(" ")
		}
		g.add(lang.word(g.rng))
	}
	g.add(" request_id=")
	g.buf = strconv.AppendUint(g.buf, g.rng.Uint64()>>24, 16)
	g.add(" user=")
	g.add(lang.word(g.rng))
	g.add(" latency_ms=")
	g.num(int64(g.rng.ExpFloat64() * 30))
	g.add(" bytes=")
	g.num(int64(g.rng.ExpFloat64() * 20000))
	if g.rng.IntN(3) == 0 {
		g.add(" status=")
		g.num([]int64{200, 200, 200, 201, 204, 301, 404, 500}[g.rng.IntN(8)])
	}
	g.add("\n")
}

// record appends one JSON record of a table dump.
func (g *textGen) record() {
	g.add(`{"id":`)
	g.num(100000 + g.rng.Int64N(900000))
	g.add(`,"name":"`)
	g.add(lang.word(g.rng))
	g.add(" ")
	g.add(lang.word(g.rng))
	g.add(`","email":"`)
	g.add(lang.word(g.rng))
	g.add(".")
	g.add(lang.word(g.rng))
	g.add(`@example.com","balance":`)
	g.num(g.rng.Int64N(100000))
	g.add(".")
	g.pad(g.rng.Int64N(100), 2)
	g.add(`,"active":`)
	if g.rng.IntN(4) == 0 {
		g.add("false")
	} else {
		g.add("true")
	}
	g.add(`,"score":`)
	g.buf = strconv.AppendFloat(g.buf, math.Round(g.rng.NormFloat64()*1000)/100, 'f', -1, 64)
	g.add(`,"created":"20`)
	g.pad(10+g.rng.Int64N(16), 2)
	g.add("-")
	g.pad(1+g.rng.Int64N(12), 2)
	g.add("-")
	g.pad(1+g.rng.Int64N(28), 2)
	g.add(`","tags":["`)
	g.add(lang.word(g.rng))
	g.add(`","`)
	g.add(lang.word(g.rng))
	g.add(`"]}`)
	g.add("\n")
}

// pad appends n with leading zeros to width digits.
func (g *textGen) pad(n int64, width int) {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], n, 10)
	for i := len(s); i < width; i++ {
		g.buf = append(g.buf, '0')
	}
	g.buf = append(g.buf, s...)
}
