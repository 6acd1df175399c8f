"""The package format registry (buildbot_kernel/formats): descriptions are data, read and checked."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from buildbot_kernel import formats, kbuild_commands
from buildbot_kernel.imagetree import package
from buildbot_kernel.settings import Build

BUILD = Build(name="x86_64", arch="x86_64", packages=["tar", "deb"])
NAME = "6.1.0-fake-drm-intel-next_18097b_20130718_+"


def test_shipped_formats():
    reg = formats.registry()
    assert set(reg) == {"tar", "deb"}
    assert reg["tar"].always and not reg["deb"].always
    assert reg["tar"].required == ("vmlinuz", "config", "System.map", "modules.tar.xz")
    assert package.REQUIRED_FILES == formats.always_required() == reg["tar"].required
    assert reg["deb"].owns("linux-image-x_1-1_amd64.deb") and not reg["deb"].owns("vmlinuz")
    assert "dpkg-deb" in reg["deb"].tools


def test_selected_puts_always_first_and_never_twice():
    assert [f.name for f in formats.selected(["deb"])] == ["tar", "deb"]
    assert [f.name for f in formats.selected(["tar", "deb"])] == ["tar", "deb"]
    assert [f.name for f in formats.selected([])] == ["tar"]
    assert [f.name for f in formats.selected(["deb", "deb", "tar"])] == ["tar", "deb"]
    with pytest.raises(formats.FormatError, match="no package format 'rpm'; known: deb, tar"):
        formats.selected(["rpm"])


def test_a_new_format_is_one_file(tmp_path):
    (tmp_path / "zip.ini").write_text("[format]\ndescription = zipped\nfiles = *.zip\nrequired = *.zip\n"
                                      "script =\n    cd stage && zip -r ../pkg/\"$BBK_NAME.zip\" .\n")
    reg = formats.registry(tmp_path)
    z = reg["zip"]
    assert z.missing(["vmlinuz"]) == ["*.zip"] and z.missing([f"{NAME}.zip"]) == []
    shell = z.shell(NAME, BUILD)
    assert f"export BBK_NAME={NAME}" in shell and 'zip -r ../pkg/"$BBK_NAME.zip" .' in shell


@pytest.mark.parametrize("text, problem", [
    ("[format]\nfiles = x\nscript = true\n", "description is missing"),
    ("[format]\ndescription = d\nfiles = x\nrequired = y\nscript = true\n", "required lists ['y']"),
    ("[format]\ndescription = d\nfiles = x\nscript = true\nalways = maybe\n", "always must be true or false"),
    ("[format]\ndescription = d\nfiles = x\nscript = true\nvariables = ../../os\n", "variables names a module"),
    ("[other]\n", "no [format] section"),
    ("[format\n", "cannot read"),
])
def test_malformed_descriptions_name_file_and_key(tmp_path, text, problem):
    (tmp_path / "bad.ini").write_text(text)
    with pytest.raises(formats.FormatError, match="^bad.ini: ") as e:
        formats.registry(tmp_path)
    assert problem in str(e.value)


def test_values_reach_the_script_quoted_never_as_code(tmp_path):
    (tmp_path / "echo.ini").write_text("[format]\ndescription = d\nfiles = out\nscript =\n"
                                       "    printf '%s' \"$BBK_NAME\" > pkg/out\n")
    fmt = formats.registry(tmp_path)["echo"]
    hostile = "1$(touch pwned)'\";x"
    (tmp_path / "pkg").mkdir()
    subprocess.run(["sh", "-ec", fmt.shell(hostile, BUILD)], cwd=tmp_path, check=True)
    assert (tmp_path / "pkg" / "out").read_text() == hostile and not (tmp_path / "pwned").exists()


def test_package_script_runs_every_selected_format_in_order():
    script = kbuild_commands.package_script(BUILD, NAME)
    assert script.index("# package format tar") < script.index("# package format deb")
    assert "dpkg-deb --root-owner-group" in script
    assert "# package format deb" not in kbuild_commands.package_script(replace(BUILD, packages=("tar",)), NAME)
    assert f"stage/boot/vmlinuz-{NAME}" in script  # the exact image name: '+' and '_' need no quoting
    assert script.rstrip().endswith("ls -l pkg")


def test_format_problems_checks_the_formats_an_image_lists():
    files = {"vmlinuz": {}, "config": {}, "System.map": {}, "modules.tar.xz": {}}
    assert package.format_problems(["tar", "deb"], files) == [
        "package format 'deb': no file matching '*.deb' in the manifest"]
    assert package.format_problems(["tar", "deb"], {**files, "x_1-1_amd64.deb": {}}) == []
    assert package.format_problems(["tar", "future-format"], files) == []  # newer tree, older reader
    assert package.format_problems("deb", files) == []  # not a list: not ours to judge here
