"""An index row: everything an image's writer controls is escaped, and names in links are URL-quoted."""

from __future__ import annotations

import html.parser

import pytest

from buildbot_kernel.imagetree.rows import image_row

HOSTILE = '"><img src=x onerror=alert(1)>&\''


def entry(**over) -> dict:
    e = {"name": "6.1.0-next_abcdef_20250101_+", "path": "next/6.1.0-next_abcdef_20250101_+/", "sha": "a" * 40,
         "subject": "s", "commit_date": "2025-01-01T00:00:00Z", "build_date": "2025-01-01T01:00:00Z",
         "build": "x86_64", "arch": "x86_64", "head": False, "on_demand": False,
         "files": {"vmlinuz": {"size": 2048, "sha256": "0" * 64}}}
    e.update(over)
    return e


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.hrefs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [v for k, v in attrs if k == "href"]

    def handle_data(self, data):
        self.text.append(data)


def parse(row: str) -> Tags:
    p = Tags()
    p.feed(row)
    return p


def test_every_field_an_image_writer_controls_is_text_not_markup():
    row = image_row(entry(name=HOSTILE, path=f"next/{HOSTILE}/", subject=HOSTILE, build=HOSTILE, arch=HOSTILE,
                          commit_date=HOSTILE, build_date=HOSTILE, sha=HOSTILE,
                          files={HOSTILE: {"size": 1, "sha256": "0" * 64}},
                          tests={HOSTILE: {"result": HOSTILE, "date": HOSTILE, "machine": HOSTILE}}))
    p = parse(row)
    assert "img" not in p.tags and set(p.tags) <= {"tr", "td", "a", "span"}
    assert HOSTILE in "".join(p.text)  # shown as it is, as text


@pytest.mark.parametrize("key", ["name", "path", "sha", "subject", "commit_date", "build_date", "build", "arch"])
@pytest.mark.parametrize("char", ['<', '>', '&', '"', "'"])
def test_one_hostile_character_in_one_field_is_escaped_in_a_row_otherwise_plain(key, char):
    """A row with nothing to escape skips escaping; one special character anywhere must undo that."""
    value = f"x{char}img src=x{char}" if key != "path" else f"next/x{char}img{char}/"
    row = image_row(entry(**{key: value}))
    p = parse(row)
    assert "img" not in p.tags and set(p.tags) <= {"tr", "td", "a", "span"}
    assert value in "".join(p.text) + "".join(p.hrefs) or value[:12] in "".join(p.text)
    assert value not in row  # never as it is in the markup


def test_file_and_test_names_are_quoted_in_links():
    p = parse(image_row(entry(files={"a b#?.ko": {"size": 1, "sha256": "0" * 64}},
                              tests={"boot/..#x": {"result": "pass"}})))
    assert "next/6.1.0-next_abcdef_20250101_+/a%20b%23%3F.ko" in p.hrefs
    assert "next/6.1.0-next_abcdef_20250101_+/tests/boot/..%23x.log" in p.hrefs


def test_files_and_tests_in_name_order_with_sizes_marks_and_links():
    row = image_row(entry(head=True, on_demand=True, files={
        "vmlinuz": {"size": 5 << 20, "sha256": "0" * 64}, "build.log.xz": {"size": 10, "sha256": "0" * 64},
        "Zconfig": {"size": 1536, "sha256": "0" * 64}, "reproducer.sh": {"size": 1, "sha256": "0" * 64}},
        tests={"smoke": {"result": "fail"}, "Boot": {"result": "pass"}}))
    assert row.index(">build.log.xz<") < row.index(">vmlinuz<") < row.index(">Zconfig<")  # case aside
    assert "1.5 KiB" in row and "5.0 MiB" in row and "10 B" in row
    assert row.index("Boot: pass") < row.index("smoke: fail")
    assert 'class="head"' in row and 'class="on-demand"' in row
    assert 'class="log"' in row and 'class="reproducer"' in row
    assert "\n" not in row
