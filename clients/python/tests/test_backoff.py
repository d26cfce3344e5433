"""Backoff: bounds, doubling, jitter."""

from __future__ import annotations

import random
import unittest

import _support  # noqa: F401
from muster._backoff import Backoff, jittered


class Doubling(unittest.TestCase):
    def test_doubles_from_250ms_to_5s(self) -> None:
        b = Backoff(rng=lambda: 0.5)  # factor 1: the bases themselves
        self.assertEqual([b.next() for _ in range(8)], [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0])

    def test_reset_starts_over(self) -> None:
        b = Backoff(rng=lambda: 0.5)
        for _ in range(5):
            b.next()
        b.reset()
        self.assertEqual(b.next(), 0.25)


class Jitter(unittest.TestCase):
    def test_between_half_and_one_and_a_half(self) -> None:
        self.assertEqual(jittered(1.0, 0.0), 0.5)
        self.assertEqual(jittered(1.0, 1.0), 1.5)
        self.assertEqual(jittered(4.0, 0.25), 3.0)

    def test_bounds_over_many_draws(self) -> None:
        rng = random.Random(7)
        b = Backoff(rng=rng.random)
        seen = []
        for _ in range(2000):
            base = b.base
            w = b.next()
            self.assertGreaterEqual(w, base * 0.5)
            self.assertLessEqual(w, base * 1.5)
            self.assertLessEqual(w, 7.5)
            seen.append(w / base)
        # Spread over the whole range, not in step.
        self.assertLess(min(seen), 0.55)
        self.assertGreater(max(seen), 1.45)

    def test_default_rng_varies(self) -> None:
        waits = {Backoff().next() for _ in range(50)}
        self.assertGreater(len(waits), 40)
        self.assertTrue(all(0.125 <= w <= 0.375 for w in waits))

    def test_bad_bounds(self) -> None:
        with self.assertRaises(ValueError):
            Backoff(first=0)
        with self.assertRaises(ValueError):
            Backoff(first=2, maximum=1)


if __name__ == "__main__":
    unittest.main()
