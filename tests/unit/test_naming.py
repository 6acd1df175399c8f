"""The image name contract: what `uname -r` must print on the test machine."""

import pytest

from buildbot_kernel.naming import (
    NameError_,
    commit_day,
    component_problem,
    config_localversion,
    image_name,
    parse_image_name,
    safe_branch,
)

SHA = "18097b4c2a6d93e1f3c7a4bbd0e6f9a1b2c3d4e5"
# 2013-07-18 23:30 UTC is 2013-07-19 in UTC+2: the name must follow UTC
TS = 1374190200


def test_seed_example_untagged_commit_gets_plus():
    assert image_name("3.10.0-rc7", "drm-intel-fixes", SHA, TS, at_release_tag=False) == \
        "3.10.0-rc7-drm-intel-fixes_18097b_20130718_+"


def test_release_tag_has_no_plus():
    assert image_name("3.10.0", "drm-intel-fixes", SHA, TS, at_release_tag=True) == \
        "3.10.0-drm-intel-fixes_18097b_20130718_"


def test_date_is_committer_date_in_utc_not_local_time():
    assert commit_day(TS) == "20130718"
    assert commit_day(TS + 3600) == "20130719"  # 00:30 UTC next day


@pytest.mark.parametrize("ts", [253402300800, 2**63, 2**64 + 1, -62135596801, -30610224001])
def test_a_date_without_eight_digits_is_a_name_error(ts):
    assert commit_day(253402300799) == "99991231"
    with pytest.raises(NameError_, match=f"committer date {ts} is not in the years 1000 to 9999"):
        commit_day(ts)


def test_branch_with_slash_becomes_one_path_component():
    assert safe_branch("topic/i915/psr") == "topic-i915-psr"
    assert config_localversion("topic/i915", SHA, TS) == "-topic-i915_18097b_20130718_"


def test_localversion_files_come_before_config_localversion():
    assert image_name("6.1.0", "drm-tip", SHA, TS, at_release_tag=False, localversion_files="-rt5") == \
        "6.1.0-rt5-drm-tip_18097b_20130718_+"


def test_sha_is_lowercased_and_validated():
    assert config_localversion("b", SHA.upper(), TS).startswith("-b_18097b_")
    with pytest.raises(ValueError, match="hexadecimal"):
        config_localversion("b", "xyz123", TS)
    with pytest.raises(ValueError, match="empty"):
        image_name(" ", "b", SHA, TS, at_release_tag=False)


@pytest.mark.parametrize("name,kernel,branch,plus", [
    ("3.10.0-rc7-drm-intel-fixes_18097b_20130718_+", "3.10.0-rc7", "drm-intel-fixes", True),
    ("3.10.0-nightlytop_b1bc20_20130722_+", "3.10.0", "nightlytop", True),
    ("3.11.0-rc2-nightlytop_fa7fc2_20130723_", "3.11.0-rc2", "nightlytop", False),
])
def test_parse_round_trips_the_seed_list(name, kernel, branch, plus):
    p = parse_image_name(name)
    assert (p.kernel, p.branch, p.at_release_tag is not plus) == (kernel, branch, True)


def test_parse_rejects_other_strings():
    with pytest.raises(NameError_):
        parse_image_name("6.1.0-13-amd64")


@pytest.mark.parametrize("char", [chr(c) for c in (*range(32), 127)])
def test_every_control_character_is_refused_in_a_path_component(char):
    assert "NUL or control character" in component_problem(f"img{char}name")


@pytest.mark.parametrize("char", ["\x80", "\u00e9", "\u2028", " ", "~"])
def test_other_characters_are_not_control_characters(char):
    assert component_problem(f"img{char}name") == ""
