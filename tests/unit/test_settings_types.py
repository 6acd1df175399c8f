"""Typed settings (buildbot_kernel/settings.py, docs/settings.md): one frozen record per section and table
entry, its fields and defaults taken from the schema, read by attribute only."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import tomllib
from pathlib import Path

import pytest

from buildbot_kernel import settings, settings_doc
from buildbot_kernel.farm.testing import settings_toml
from buildbot_kernel.resources import shipped

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = {**settings.SECTIONS, **settings.OPTIONAL_SECTIONS, **settings.TABLES}
GOOD = settings_toml(8011, "images", "http://127.0.0.1:8011", """
[[test]]
name = "boot"
command = "true"
[notify]
from = "bb@example.org"
to = ["list@example.org"]
""")


def test_every_section_and_table_has_a_record_whose_fields_are_the_schema_keys():
    assert set(settings.RECORDS) == set(SCHEMAS)
    for name, schema in SCHEMAS.items():
        record = settings.RECORDS[name]
        assert dataclasses.is_dataclass(record) and record.SCHEMA is schema
        assert [f.name for f in dataclasses.fields(record)] == [settings.field_name(k) for k in schema], name


def test_defaults_are_the_schema_defaults_and_required_keys_have_none():
    for name, schema in SCHEMAS.items():
        fields = {f.name: f for f in dataclasses.fields(settings.RECORDS[name])}
        for key, spec in schema.items():
            f = fields[settings.field_name(key)]
            if spec.default is settings.REQUIRED:
                assert f.default is dataclasses.MISSING, f"{name}.{key}"
            else:  # a TOML list default is the same values as a tuple
                expected = tuple(spec.default) if isinstance(spec.default, list) else spec.default
                assert f.default == expected and type(f.default) is type(expected), f"{name}.{key}"
    with pytest.raises(TypeError, match="name"):
        settings.Machine()  # a required key has no default
    m = settings.Machine(name="vm1")
    assert (m.retries, m.poll, m.boot_timeout, m.type) == (2, 5, 300, "remote")
    assert settings.default("machine", "poll") == m.poll
    with pytest.raises(KeyError, match="required"):
        settings.default("machine", "name")


def test_values_have_the_schema_types(tmp_path):
    s = settings.parse(GOOD, str(tmp_path / "s.toml"))
    records = [s.server, s.images, s.notify, *s.repositories, *s.builds, *s.workers, *s.tests]
    for record in records:
        for key, spec in record.SCHEMA.items():
            value = getattr(record, settings.field_name(key))
            types = tuple(tuple if t is list else t for t in spec.types)
            assert isinstance(value, types), f"{record.LABEL}.{key} = {value!r}"
            if isinstance(value, tuple):
                assert all(isinstance(v, str) for v in value)
    assert s.server.web_port == 8010 and s.images.debounce == 1.0 and s.build("b").ccache is True
    assert s.repositories[0].branches == ("main",) and s.notify.from_ == "bb@example.org"
    assert s.notify.events == ("build-failed", "regression", "culprit")
    assert s.auth is None and s.machines == ()


def test_records_are_frozen_all_the_way_down(tmp_path):
    s = settings.parse(GOOD, str(tmp_path / "s.toml"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.server.web_port = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.builds = ()
    assert isinstance(s.repositories, tuple) and isinstance(s.build("b").packages, tuple)
    with pytest.raises(AttributeError):
        s.build("b").packages.append("deb")
    # a record made in code from lists is as immutable (and hashable) as a parsed one
    b = settings.Build(name="x", fragments=["a.config"])
    assert b.fragments == ("a.config",) and hash(b) == hash(settings.Build(name="x", fragments=("a.config",)))


def test_a_secret_is_not_in_the_repr(tmp_path):
    s = settings.parse(GOOD.replace('password = "p"', 'password = "s3cret-worker-pw"'), str(tmp_path / "s.toml"))
    assert s.workers[0].password == "s3cret-worker-pw"
    assert "s3cret" not in repr(s.workers[0]) and "s3cret" not in repr(s) and "name='w'" in repr(s.workers[0])


def test_dict_access_fails(tmp_path):
    s = settings.parse(GOOD, str(tmp_path / "s.toml"))
    with pytest.raises(TypeError):
        s.server["web_port"]  # noqa: B018
    with pytest.raises(TypeError):
        s.build("b")["arch"]  # noqa: B018
    assert not hasattr(s.build("b"), "get") and not hasattr(s.server, "keys")


def test_to_json_gives_toml_names_and_lists_and_builds_the_same_record(tmp_path):
    s = settings.parse(GOOD, str(tmp_path / "s.toml"))
    n = s.notify.to_json()
    assert n["from"] == "bb@example.org" and "from_" not in n and n["to"] == ["list@example.org"]
    for record in (s.server, s.images, s.notify, *s.repositories, *s.builds, *s.workers, *s.tests):
        assert list(record.to_json()) == list(record.SCHEMA)
        assert type(record).from_toml(record.to_json()) == record


def test_the_shipped_settings_round_trip():
    """What the shipped file says, plus the schema's defaults, is exactly what the records hold."""
    path = shipped("settings.toml")
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    s = settings.load(path)
    sections = {"server": s.server, "images": s.images, "auth": s.auth, "notify": s.notify}
    tables = {"repository": s.repositories, "build": s.builds, "worker": s.workers, "machine": s.machines,
              "test": s.tests}
    derived = {("images", "base_url")}  # filled in from [server].image_port when empty
    for name, record in sections.items():
        if record is None:
            assert name not in raw
            continue
        expected = {k: spec.default for k, spec in SCHEMAS[name].items()} | raw.get(name, {})
        got = record.to_json()
        assert {k: v for k, v in got.items() if (name, k) not in derived} == {
            k: v for k, v in expected.items() if (name, k) not in derived}, name
    assert s.images.base_url == f"http://localhost:{s.server.image_port}"
    for name, records in tables.items():
        assert [r.to_json() for r in records] == [
            {k: spec.default for k, spec in SCHEMAS[name].items()} | item for item in raw.get(name, [])], name
    assert pickle.loads(pickle.dumps(s)) == s and copy.deepcopy(s) == s


@pytest.mark.parametrize("change,expected", [
    ('[[machine]]\nname = "vm1"\ntype = "qemu"\nretries = -1\n',
     "[[machine]] #1 ('vm1').retries: expected a whole number >= 0, got -1"),
    ('[[machine]]\nname = "vm1"\ntype = "qemu"\nretrys = 1\n',
     "[[machine]] #1 ('vm1'): unknown key 'retrys' (allowed: accel, boot_timeout,"),
    ('[[worker]]\nname = "w2"\npassword = "p"\nmax_builds = true\n',
     "[[worker]] #2 ('w2').max_builds: expected a whole number > 0, got True"),
])
def test_a_bad_key_still_names_the_field_and_the_fix(tmp_path, change, expected):
    with pytest.raises(settings.SettingsError) as e:
        settings.parse(GOOD + change, str(tmp_path / "s.toml"))
    assert expected in str(e.value)
    assert all(line.startswith(f"{tmp_path / 's.toml'}: ") for line in str(e.value).splitlines())


def test_a_keyword_key_is_read_with_a_trailing_underscore():
    assert settings.field_name("class") == "class_" and settings.field_name("from") == "from_"
    assert settings.field_name("type") == "type"  # a builtin's name is no keyword
    schema = {**settings.TABLES["machine"], "class": settings.Key((str,), "", "a machine class")}
    record = settings.record_class("Machine", "[[machine]]", schema)
    m = record.from_toml({"name": "vm1", "class": "skl"})
    assert m.class_ == "skl" and m.to_json()["class"] == "skl" and m.retries == 2


def test_a_new_key_is_one_schema_line():
    """The record grows with the schema: a new key needs no dataclass edit."""
    schema = {**settings.TABLES["test"], "max_machines": settings.Key((int,), 1, "a whole number > 0")}
    record = settings.record_class("Test", "[[test]]", schema)
    t = record(name="boot", command="true")
    assert t.max_machines == 1 and t.to_json()["max_machines"] == 1


def test_docs_list_every_key_with_its_default():
    text = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert settings_doc.reference() in text, (
        "docs/settings.md does not match the schema; run: python -m buildbot_kernel.settings_doc docs/settings.md")
    for name, schema in SCHEMAS.items():
        for key in schema:
            assert f"| `{key}`" in text, f"{name}.{key} is not documented"


def test_the_settings_module_points_at_the_contract():
    assert "docs/settings.md" in settings.__doc__
