"""Examples in README.md and docs/ that users copy: they must work as written."""

from __future__ import annotations

import re
from pathlib import Path

from buildbot_kernel import settings
from buildbot_kernel.farm import instructions, registry

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_minimal_settings_file_loads_and_has_a_worker(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("A complete minimal file")
    block = re.search(r"```toml\n(.*?)```", readme[start:], re.S).group(1)
    (tmp_path / "settings.toml").write_text(block, encoding="utf-8")
    s = settings.load(tmp_path / "settings.toml")
    assert [w.name for w in s.workers] == ["local"]


def test_the_farm_protocol_page_names_every_instruction_key_and_result():
    doc = (ROOT / "docs" / "farm-protocol.md").read_text(encoding="utf-8")
    assert [k for k in instructions.KEYS if f"`{k}" not in doc and f"{k}=" not in doc] == []
    assert [r for r in registry.FINAL_RESULTS + registry.PROGRESS_RESULTS if f"`{r}`" not in doc] == []
    assert [f for f in registry.REPORT_FIELDS if f"| `{f}` |" not in doc] == []
