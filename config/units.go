package config

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// rateUnits are the units of a transfer rate, in bytes per second. Bits
// end in "bps", bytes in "B/s"; K, M and G are powers of 1000, Ki, Mi and
// Gi powers of 1024.
var rateUnits = []struct {
	name   string
	factor *big.Rat
}{
	{"bps", big.NewRat(1, 8)},
	{"Kbps", big.NewRat(1000, 8)},
	{"Mbps", big.NewRat(1000*1000, 8)},
	{"Gbps", big.NewRat(1000*1000*1000, 8)},
	{"B/s", big.NewRat(1, 1)},
	{"KB/s", big.NewRat(1000, 1)},
	{"MB/s", big.NewRat(1000*1000, 1)},
	{"GB/s", big.NewRat(1000*1000*1000, 1)},
	{"KiB/s", big.NewRat(1<<10, 1)},
	{"MiB/s", big.NewRat(1<<20, 1)},
	{"GiB/s", big.NewRat(1<<30, 1)},
}

// sizeUnits are the units of a size, in bytes.
var sizeUnits = []struct {
	name   string
	factor int64
}{
	{"B", 1},
	{"KB", 1000},
	{"MB", 1000 * 1000},
	{"GB", 1000 * 1000 * 1000},
	{"KiB", 1 << 10},
	{"MiB", 1 << 20},
	{"GiB", 1 << 30},
}

func rateUnitNames() string {
	return "bps, Kbps, Mbps, Gbps (bits) or B/s, KB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s (bytes)"
}

// parseRate reads a transfer rate such as "200Mbps", "1.5 Gbps" or
// "25MiB/s" and returns it in whole bytes per second, rounded down.
// The letter of a unit's prefix may be in either case ("kbps"), but bits
// and bytes are told apart by "bps" and "B/s".
func parseRate(s string) (int64, error) {
	num, unit, err := splitQuantity(s)
	if err != nil {
		return 0, err
	}
	if unit == "" {
		return 0, fmt.Errorf("%q has no unit; use %s, like 200Mbps or 25MB/s", s, rateUnitNames())
	}
	for _, u := range rateUnits {
		if unitEqual(unit, u.name) {
			v := new(big.Rat).Mul(num, u.factor)
			return wholeBytes(s, v, "byte per second")
		}
	}
	return 0, fmt.Errorf("%q has an unknown unit %q; use %s", s, unit, rateUnitNames())
}

// parseSize reads a size such as "16KiB", "1 MiB" or "4096" (bytes) and
// returns it in bytes; it must come to a whole number of bytes.
func parseSize(s string) (int64, error) {
	num, unit, err := splitQuantity(s)
	if err != nil {
		return 0, err
	}
	if unit == "" {
		unit = "B"
	}
	for _, u := range sizeUnits {
		if unitEqual(unit, u.name) {
			v := new(big.Rat).Mul(num, big.NewRat(u.factor, 1))
			if !v.IsInt() {
				return 0, fmt.Errorf("%q is not a whole number of bytes", s)
			}
			return wholeBytes(s, v, "byte")
		}
	}
	return 0, fmt.Errorf("%q has an unknown unit %q; use B, KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000)", s, unit)
}

// unitEqual compares units ignoring the case of the prefix letters, so
// "kbps" and "Kbps" agree but "MBps" (not a unit) matches nothing.
func unitEqual(got, want string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, suffix := range []string{"bps", "B/s", "iB", "B"} {
		if strings.HasSuffix(want, suffix) {
			return strings.HasSuffix(got, suffix) &&
				strings.EqualFold(got[:len(got)-len(suffix)], want[:len(want)-len(suffix)])
		}
	}
	return got == want
}

// splitQuantity splits "1.5 Gbps" into an exact non-negative decimal number
// and a unit.
func splitQuantity(s string) (*big.Rat, string, error) {
	t := strings.TrimSpace(s)
	i := 0
	dots := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		if t[i] == '.' {
			dots++
		}
		i++
	}
	digits := t[:i]
	if digits == "" || digits == "." || dots > 1 {
		if strings.HasPrefix(t, "-") {
			return nil, "", fmt.Errorf("%q is negative", s)
		}
		return nil, "", fmt.Errorf("%q does not start with a number", s)
	}
	// Bound the work big.Rat does on absurd input.
	if len(digits) > 40 {
		return nil, "", fmt.Errorf("%q is too large", s)
	}
	num, ok := new(big.Rat).SetString(digits)
	if !ok {
		return nil, "", fmt.Errorf("%q does not start with a number", s)
	}
	return num, strings.TrimSpace(t[i:]), nil
}

// wholeBytes rounds v down to an int64 that is at least 1; unit names
// what 1 is.
func wholeBytes(s string, v *big.Rat, unit string) (int64, error) {
	n := new(big.Int).Quo(v.Num(), v.Denom())
	switch {
	case n.Sign() == 0:
		return 0, fmt.Errorf("%q is less than 1 %s", s, unit)
	case !n.IsInt64() || n.Int64() > math.MaxInt64/2:
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n.Int64(), nil
}

// formatSize renders bytes with the largest binary unit that divides them.
func formatSize(n int64) string {
	for i := len(sizeUnits) - 1; i >= 0; i-- {
		u := sizeUnits[i]
		if strings.HasSuffix(u.name, "iB") && n >= u.factor && n%u.factor == 0 {
			return fmt.Sprintf("%d%s", n/u.factor, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}
