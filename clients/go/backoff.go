package muster

import (
	"math/rand"
	"time"
)

// The reconnect wait of muster-protocol(7): once every address failed,
// 250 ms, doubling up to 5 s, each wait between half and one and a half
// of that.
const (
	BackoffBase = 250 * time.Millisecond
	BackoffMax  = 5 * time.Second
)

// backoff counts the rounds of failed addresses and says how long to
// wait after each.
type backoff struct {
	attempt int
	rand    func() float64 // in [0, 1)
}

func newBackoff(seed int64) *backoff {
	r := rand.New(rand.NewSource(seed))
	return &backoff{rand: r.Float64}
}

// step is the un-jittered wait after the given number of earlier
// rounds: 250 ms, 500 ms, 1 s, 2 s, 4 s, then 5 s.
func backoffStep(attempt int) time.Duration {
	d := BackoffBase
	for i := 0; i < attempt && d < BackoffMax; i++ {
		d *= 2
	}
	if d > BackoffMax {
		d = BackoffMax
	}
	return d
}

// jitter spreads d over [d/2, 3d/2) by r in [0, 1).
func jitter(d time.Duration, r float64) time.Duration {
	return time.Duration(float64(d) * (0.5 + r))
}

// next is the wait before the next round, and counts it.
func (b *backoff) next() time.Duration {
	d := jitter(backoffStep(b.attempt), b.rand())
	if b.attempt < 32 {
		b.attempt++
	}
	return d
}

// reset starts again from 250 ms (after a session that worked).
func (b *backoff) reset() { b.attempt = 0 }
