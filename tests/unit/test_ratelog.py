"""One log line per cause and interval, with the count of the lines left out."""

from buildbot_kernel.ratelog import RateLimitedLog


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_one_line_per_cause_and_interval_with_the_count_left_out():
    lines, clock = [], Clock()
    rl = RateLimitedLog(lines.append, interval=60, clock=clock)
    assert rl.warning("key m1", "refused %s from %s", "m1", "10.0.0.9")
    for _ in range(5):
        assert not rl.warning("key m1", "refused %s from %s", "m1", "10.0.0.9")
    assert rl.warning("body", "body too large")  # another cause is not held back
    clock.now = 61
    assert rl.warning("key m1", "refused %s from %s", "m1", "10.0.0.9")
    assert lines == ["refused m1 from 10.0.0.9", "body too large",
                     "refused m1 from 10.0.0.9 (5 more like it in the last 60s not logged)"]


def test_a_flood_of_distinct_causes_keeps_memory_bounded():
    rl = RateLimitedLog(lambda line: None, clock=Clock(), max_causes=8)
    for i in range(1000):
        rl.warning(f"cause {i}", "x")
    assert len(rl._last) == 8
