"""The image-tree commands: index, images find/verify, snippets (each through its own parser)."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from buildbot_kernel.cli import CommandError
from buildbot_kernel.commands import images, index, snippets
from buildbot_kernel.imagetree.testing import make_image


def run(module, argv):
    """Parse ``argv`` with one command module's parser (as ``buildbot-kernel`` would) and run it."""
    parser = argparse.ArgumentParser(prog="buildbot-kernel")
    module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    a = make_image(root, "next", 1, sha="abcd" + "1" * 36)
    b = make_image(root, "next", 2, sha="abcd" + "2" * 36)
    (root / "next" / "half-copied").mkdir()
    return root, a, b


def test_index_command(tree, capsys):
    root, a, b = tree
    assert run(index, ["index", "--root", str(root), "--base-url", "http://srv:8011/"]) == 0
    out = capsys.readouterr().out
    assert "2 images listed" in out and "not listed: next/half-copied" in out
    doc = json.loads((root / "index.json").read_text())
    assert doc["images"][0]["url"] == f"http://srv:8011/next/{b.name}/"


def test_index_command_errors(tmp_path):
    with pytest.raises(CommandError, match="--root"):
        run(index, ["index", "--base-url", "http://x/"])
    with pytest.raises(CommandError, match="not a directory"):
        run(index, ["index", "--root", str(tmp_path / "nope"), "--base-url", "http://x/"])
    with pytest.raises(CommandError, match="http"):
        run(index, ["index", "--root", str(tmp_path), "--base-url", "srv:8011"])


def test_find_by_path(tree, capsys):
    root, a, b = tree
    run(index, ["index", "--root", str(root), "--base-url", "http://srv/"])
    capsys.readouterr()
    assert run(images, ["images", "find", "abcd2", "--index", str(root)]) == 0
    assert capsys.readouterr().out == f"{b.name}\thttp://srv/next/{b.name}/\n"
    with pytest.raises(CommandError) as e:
        run(images, ["images", "find", "abcd", "--index", str(root / "index.json")])
    assert "ambiguous" in str(e.value) and "abcd" + "1" * 36 in str(e.value)
    with pytest.raises(CommandError, match="no image"):
        run(images, ["images", "find", "0000000", "--index", str(root)])


def test_find_over_http(tree, serve, capsys):
    root, a, b = tree
    url = serve(root)
    run(index, ["index", "--root", str(root), "--base-url", url])
    capsys.readouterr()
    run(images, ["images", "find", "abcd" + "1" * 36, "--index", url, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"][0]["name"] == a.name and doc["images"][0]["url"] == f"{url}next/{a.name}/"


def test_verify(tree, capsys):
    root, a, b = tree
    assert run(images, ["images", "verify", str(a)]) == 0
    (b / "config").write_text("tampered")
    assert run(images, ["images", "verify", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert f"{a}: ok" in out and "'config'" in out


def test_snippets(tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text('''
[server]
image_port = 8011
[images]
root = "tree"
base_url = "http://images.example.org/kernels/"
[[repository]]
name = "r"
url = "https://example.org/r.git"
branches = ["main"]
build = "x86_64"
[[build]]
name = "x86_64"
[[worker]]
name = "w"
password = "p"
''')
    assert run(snippets, ["snippets", "--settings", str(settings), "--nfs-clients", "10.0.0.0/8"]) == 0
    out = capsys.readouterr().out
    root = str(tmp_path / "tree")
    assert f'Alias "/kernels" "{root}"' in out
    assert f"alias {root}/;" in out and "location /kernels/ {" in out and "listen 80;" in out
    assert f"{root} 10.0.0.0/8(ro," in out


def test_nginx_snippet_is_valid_nginx(tmp_path):
    """The generated server block passes ``nginx -t`` inside a minimal http block."""
    from buildbot_kernel.imagetree.snippets import render, snippet_vars

    nginx = "/usr/sbin/nginx"
    server = render("nginx", **snippet_vars(str(tmp_path), "http://127.0.0.1:18111/", "*",
                                            access_log=str(tmp_path / "access.log")))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log; events {{}}\n"
                    f"http {{ client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};"
                    f" fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};"
                    f"\n{server}\n}}\n")
    try:
        r = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True,
                           text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("nginx is not installed (scripts/install-deps installs it)")
    assert r.returncode == 0, r.stderr
