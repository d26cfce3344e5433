package muster

import (
	"testing"
	"time"
)

func TestBackoffDoublesToFiveSeconds(t *testing.T) {
	want := []time.Duration{250, 500, 1000, 2000, 4000, 5000, 5000, 5000}
	for i, w := range want {
		if got := backoffStep(i); got != w*time.Millisecond {
			t.Errorf("step %d: %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := backoffStep(1000); got != BackoffMax {
		t.Errorf("step 1000: %v", got)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	d := time.Second
	if got := jitter(d, 0); got != 500*time.Millisecond {
		t.Errorf("r=0: %v", got)
	}
	if got := jitter(d, 0.5); got != d {
		t.Errorf("r=0.5: %v", got)
	}
	if got := jitter(d, 0.999999); got >= 1500*time.Millisecond || got < 1499*time.Millisecond {
		t.Errorf("r→1: %v", got)
	}
}

func TestBackoffSequence(t *testing.T) {
	for seed := int64(0); seed < 200; seed++ {
		b := newBackoff(seed)
		for i := 0; i < 10; i++ {
			step := backoffStep(i)
			got := b.next()
			if got < step/2 || got >= step*3/2 {
				t.Fatalf("seed %d round %d: %v outside [%v, %v)", seed, i, got, step/2, step*3/2)
			}
		}
		b.reset()
		if got := b.next(); got < 125*time.Millisecond || got >= 375*time.Millisecond {
			t.Fatalf("after reset: %v", got)
		}
	}
	// The jitter is spread, not constant.
	b := newBackoff(1)
	seen := map[time.Duration]bool{}
	for i := 0; i < 20; i++ {
		b.reset()
		seen[b.next()] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct waits in 20", len(seen))
	}
}
