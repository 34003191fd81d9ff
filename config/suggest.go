package config

// suggest returns the candidate closest to given when it is close enough
// to be a likely typo, or "".
func suggest(given string, candidates []string) string {
	best, bestDist := "", 3 // further than 2 edits away is not a typo
	for _, c := range candidates {
		if d := editDistance(given, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the edit distance between a and b, counted in bytes:
// insertions, deletions, substitutions and swaps of neighbours (the
// commonest typo, "wbe" for "web") each count one.
func editDistance(a, b string) int {
	before := make([]int, len(b)+1) // the row before prev, for swaps
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], before[j-2]+1)
			}
		}
		before, prev, cur = prev, cur, before
	}
	return prev[len(b)]
}

// didYouMean returns " Did you mean X?" for a close candidate, or "".
func didYouMean(given string, candidates []string) string {
	if s := suggest(given, candidates); s != "" {
		return " Did you mean " + s + "?"
	}
	return ""
}

// Suggest returns the candidate closest to given when it is close enough
// (two edits at most) to be a likely typo, or "". Other packages use it to
// make the same "did you mean" offers the configuration does.
func Suggest(given string, candidates []string) string { return suggest(given, candidates) }
