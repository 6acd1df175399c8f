"""Masters sharing ``state_dir``: the second one given ``[[machine]]`` starts no second farm on the same
machine registry, and a bisect asking it for a machine is told why (README "Growing past one machine")."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from test_multi_master import holder
from test_settings import GOOD
from twisted.internet import defer
from twisted.trial import unittest

from buildbot_kernel.master.farm_service import FarmService


class FarmOwnerTest(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_farm_already_running_on_another_master_is_not_started_twice(self):
        base = Path(tempfile.mkdtemp(prefix="farm-owner-"))
        self.addCleanup(shutil.rmtree, base, True)
        settings = base / "settings.toml"
        settings.write_text(GOOD)
        state = base / "state"
        other = holder(state / "farm.lock")  # the master that runs the farm
        self.addCleanup(other.communicate, "\n", 30)
        svc = FarmService(settings_path=str(settings), state_dir=str(state))
        yield svc.startService()  # reconfigures with the arguments given above
        self.assertIsNone(svc.farm)
        self.assertFalse((state / "farm.json").exists())
        with self.assertRaises(RuntimeError) as e:
            yield svc.driver("m1")
        self.assertIn(f"runs on another master (the one holding {state / 'farm.lock'}); machine work is left to it",
                      str(e.exception))
        self.assertFalse(svc.owns_farm)  # master/farm_route.py leaves machine work to the other master
        yield svc.stopService()
