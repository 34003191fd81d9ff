package sdk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCPUProfileIsWrittenWhereTheVariableSays(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(CPUProfileEnv, dir)
	stop, err := StartCPUProfile("ferry-plugin-x")
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err == nil {
		t.Error("a second stop said nothing")
	}
	b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("ferry-plugin-x-%d.pprof", os.Getpid())))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) { // pprof profiles are gzipped
		t.Errorf("the profile does not look like one: % x", b[:min(len(b), 8)])
	}
}

func TestNoCPUProfileWithoutTheVariable(t *testing.T) {
	t.Setenv(CPUProfileEnv, "")
	stop, err := StartCPUProfile("ferry-plugin-x")
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// A profile started now would fail if one were still running.
	t.Setenv(CPUProfileEnv, t.TempDir())
	stop, err = StartCPUProfile("ferry-plugin-y")
	if err != nil {
		t.Fatalf("a profile was left running: %v", err)
	}
	stop()
}

func TestCPUProfileInAFolderThatIsNotThere(t *testing.T) {
	t.Setenv(CPUProfileEnv, filepath.Join(t.TempDir(), "missing"))
	stop, err := StartCPUProfile("ferry")
	if err == nil {
		t.Error("no error for a folder that does not exist")
	}
	if err := stop(); err != nil {
		t.Errorf("stop after a failed start: %v", err)
	}
}
