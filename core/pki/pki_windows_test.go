package pki

import "testing"

var platformLoadTests []struct {
	name  string
	file  string
	spoil func(t *testing.T, path string)
	want  string
}
