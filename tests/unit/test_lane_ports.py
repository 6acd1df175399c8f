"""The suite's port allocator (tests/lane_ports.py): the two lanes of scripts/run-tests must never hand
out the same port, and one lane must not hand out a port twice or one that something holds."""

from __future__ import annotations

import socket

import lane_ports
import pytest


def test_a_range_is_low_high_and_a_bad_one_names_the_variable():
    assert lane_ports.port_range("21000-26999") == (21000, 26999)
    assert lane_ports.port_range("") == lane_ports.DEFAULT_RANGE
    for bad in ("21000", "a-b", "26999-21000", "80-90", "60000-70000"):
        with pytest.raises(ValueError, match="BBK_TEST_PORTS is"):
            lane_ports.port_range(bad)


def test_ports_stay_in_the_lane_range_and_are_not_handed_out_twice(monkeypatch):
    monkeypatch.setenv("BBK_TEST_PORTS", "23000-23049")
    monkeypatch.setattr(lane_ports, "_next", None)
    ports = [lane_ports.free_port() for _ in range(40)]
    assert len(set(ports)) == 40
    assert all(23000 <= p <= 23049 for p in ports)


def test_a_held_port_is_skipped(monkeypatch):
    monkeypatch.setenv("BBK_TEST_PORTS", "23100-23101")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 23100))
        held.listen()
        monkeypatch.setattr(lane_ports, "_next", 23100)
        assert lane_ports.free_port() == 23101
        assert lane_ports.free_port() == 23101  # wrapped: 23100 is still held
        monkeypatch.setenv("BBK_TEST_PORTS", "23100-23100")
        with pytest.raises(RuntimeError, match="no free port in 23100-23100"):
            lane_ports.free_port()
