package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestClassRoundTrip(t *testing.T) {
	for _, c := range classes {
		t.Run(c.name, func(t *testing.T) {
			err := fmt.Errorf("vm %q: %w", "web-01", c.err)
			name := Class(err)
			if name != c.name {
				t.Fatalf("Class = %q, want %q", name, c.name)
			}
			back := WithClass(err.Error(), FromClass(name))
			if !errors.Is(back, c.err) {
				t.Fatalf("rebuilt error %v does not match its class", back)
			}
			if back.Error() != err.Error() {
				t.Fatalf("message changed: %q", back.Error())
			}
		})
	}
}

func TestUnknownClass(t *testing.T) {
	if Class(errors.New("plain")) != "" {
		t.Fatal("a plain error has a class")
	}
	if FromClass("from_the_future") != nil {
		t.Fatal("an unknown class name maps to an error")
	}
	if err := WithClass("boom", nil); err.Error() != "boom" || Class(err) != "" {
		t.Fatalf("WithClass(nil class) = %v", err)
	}
}
