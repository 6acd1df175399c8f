"""The reproducer script (buildbot_kernel/reproducer.py): embedded configs arrive byte for byte, the
commands are the builder's own."""

from __future__ import annotations

import subprocess

import pytest

from buildbot_kernel import kbuild_commands, reproducer
from buildbot_kernel.settings import Build

BUILD = Build(name="arm64", arch="arm64", config="defconfig", fragments=["a.config"],
              cross_compile="aarch64-linux-gnu-", packages=["tar"])
NAME = "6.1.0-drm-tip_18097b_20130718_+"
ARGS = {"url": "https://example.org/k.git", "sha": "a" * 40, "name": NAME, "branch": "drm-tip",
        "localversion": "-drm-tip_18097b_20130718_", "timestamp": "2013-07-18T09:30:00Z"}


@pytest.mark.parametrize("content", [
    b"CONFIG_A=y\n",
    b"CONFIG_A=y",                                     # no final newline
    b"",
    b"\xff\xfe binary\0\n",                            # not text: base64
    b"CONFIG_A=y\nBBK_BASE64\nEOF\n'\n$(touch x)\n",   # looks like delimiters and code
])
def test_embedded_files_arrive_byte_for_byte(tmp_path, content):
    lines = reproducer._embed("out", content)
    subprocess.run(["sh", "-ec", "\n".join(lines) + "\n"], cwd=tmp_path, check=True)
    assert (tmp_path / "out").read_bytes() == content and not (tmp_path / "x").exists()


def test_script_is_the_builders_commands(tmp_path):
    text = reproducer.script(BUILD, base_config=None, fragments=[b"CONFIG_X=y\n"], compiler="gcc 12", **ARGS)
    assert "unset LOCALVERSION ARCH CROSS_COMPILE KBUILD_OUTPUT" in text
    assert "git clone --no-checkout https://example.org/k.git src" in text
    assert f"git -C src checkout --detach {'a' * 40}" in text
    assert kbuild_commands.configure_script(BUILD, ARGS["localversion"], 1, False).replace("set -e\n", "") in text
    assert ("env -u LOCALVERSION make -C src O=../obj ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- "
            '-j"$(nproc)" KBUILD_BUILD_TIMESTAMP=2013-07-18T09:30:00Z KBUILD_BUILD_USER=buildbot '
            "KBUILD_BUILD_HOST=buildbot-kernel\n") in text
    assert "ccache" not in text and "CONFIG_X=y\n" in text and "# package format tar" in text
    (tmp_path / "r.sh").write_text(text)
    subprocess.run(["sh", "-n", str(tmp_path / "r.sh")], check=True)


def test_hostile_url_stays_one_argument():
    text = reproducer.script(BUILD, base_config=b"CONFIG_B=y\n", fragments=[],
                             **{**ARGS, "url": "x; rm -rf ~"})
    assert "git clone --no-checkout 'x; rm -rf ~' src" in text
    assert "cp fragments/base.config obj/.config" in text


def test_facts_match_the_script():
    facts = reproducer.facts(BUILD, full_config=False, **{k: v for k, v in ARGS.items() if k != "branch"})
    assert facts["file"] == reproducer.FILE and facts["kernelrelease"] == NAME
    assert facts["make_variables"] == {"ARCH": "arm64", "CROSS_COMPILE": "aarch64-linux-gnu-",
                                       "KBUILD_BUILD_TIMESTAMP": "2013-07-18T09:30:00Z",
                                       "KBUILD_BUILD_USER": "buildbot", "KBUILD_BUILD_HOST": "buildbot-kernel"}
    text = reproducer.script(BUILD, base_config=None, fragments=[b""], **ARGS)
    assert all(cmd in text for cmd in facts["make"])
