"""The image-tree commands: index, images find/verify, snippets (each through its own parser)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from lane_ports import free_port

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
def tree(served_tmp_path):
    # served_tmp_path: nginx's workers (www-data) and `images verify` need parents they can enter
    root = served_tmp_path / "images"
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


def test_list_and_latest_by_branch_with_the_base_url(tree, serve, capsys):
    """The base URL with or without its "/" and the index.json URL are the same --index."""
    root, a, b = tree
    other = make_image(root, "topic/x", 1)
    url = serve(root)
    run(index, ["index", "--root", str(root), "--base-url", url])
    capsys.readouterr()
    for where in (url, url.rstrip("/"), url + "index.json"):
        assert run(images, ["images", "list", "--branch", "next", "--index", where]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split("\t")[0] for line in lines] == [b.name, a.name]  # the branch's order: newest first
        assert run(images, ["images", "find", "latest", "--branch", "next", "--index", where]) == 0
        assert capsys.readouterr().out == f"{b.name}\t{url}next/{b.name}/\n"
    # by the branch's git name or its directory
    for name in ("topic/x", "topic-x"):
        run(images, ["images", "find", "latest", "--branch", name, "--index", url, "--json"])
        assert [e["name"] for e in json.loads(capsys.readouterr().out)["images"]] == [other.name]
    assert run(images, ["images", "list", "--branch", "nope", "--index", url]) == 1
    assert "no images on branch 'nope'" in capsys.readouterr().err
    with pytest.raises(CommandError, match="--branch"):
        run(images, ["images", "find", "latest", "--index", url])
    with pytest.raises(CommandError, match="no latest image"):
        run(images, ["images", "find", "latest", "--branch", "next", "--build", "arm64", "--index", url])


def test_verify(tree, capsys):
    root, a, b = tree
    assert run(images, ["images", "verify", str(a)]) == 0
    (b / "config").write_text("tampered")
    assert run(images, ["images", "verify", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert f"{a}: ok" in out and "'config'" in out


SNIPPET_SETTINGS = '''
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
'''


def test_snippets(tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text(SNIPPET_SETTINGS)
    assert run(snippets, ["snippets", "--settings", str(settings), "--nfs-clients", "10.0.0.0/8"]) == 0
    out = capsys.readouterr().out
    root = str(tmp_path / "tree")
    assert f'Alias "/kernels" "{root}"' in out
    assert f"alias {root}/;" in out and "location /kernels/ {" in out and "listen 80;" in out
    assert f"{root} 10.0.0.0/8(ro," in out
    # sha/ and machines/ go to the embedded server (image_port 8011 on [server].bind, loopback by default)
    assert "location ^~ /kernels/sha/ {\n        proxy_pass http://127.0.0.1:8011/sha/;" in out
    assert "location ^~ /kernels/machines/ {\n        proxy_pass http://127.0.0.1:8011/machines/;" in out
    assert 'ProxyPass "/kernels/sha/" "http://127.0.0.1:8011/sha/"' in out
    assert 'ProxyPass "/kernels/machines/" "http://127.0.0.1:8011/machines/"' in out
    assert "ssl_certificate" not in out and "SSLEngine" not in out


def test_snippets_tls_and_no_embedded_server(tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    text = SNIPPET_SETTINGS.replace("http://images.example.org/kernels/", "https://images.example.org/")
    settings.write_text(text)
    tls = ["--tls-cert", "/etc/ssl/certs/images.pem", "--tls-key", "/etc/ssl/private/images.key"]
    assert run(snippets, ["snippets", "--settings", str(settings), *tls]) == 0
    out = capsys.readouterr().out
    assert "listen 443 ssl;\n    server_name images.example.org;\n    ssl_certificate /etc/ssl/certs/images.pem;\n" \
           "    ssl_certificate_key /etc/ssl/private/images.key;" in out
    assert '<VirtualHost *:443>\n    ServerName images.example.org\n    SSLEngine on\n' \
           '    SSLCertificateFile "/etc/ssl/certs/images.pem"\n' in out
    assert "location ^~ /sha/ {" in out and 'ProxyPass "/machines/"' in out
    # an https base URL without certificates says where they go
    run(snippets, ["snippets", "--settings", str(settings), "--only", "nginx"])
    assert "add ssl_certificate and ssl_certificate_key" in capsys.readouterr().out
    with pytest.raises(CommandError, match="give both"):
        run(snippets, ["snippets", "--settings", str(settings), "--tls-cert", "/etc/ssl/certs/images.pem"])
    with pytest.raises(CommandError, match="--tls-key"):
        run(snippets, ["snippets", "--settings", str(settings), "--tls-cert", "/a.pem", "--tls-key", "/a b.key"])
    settings.write_text(SNIPPET_SETTINGS)
    with pytest.raises(CommandError, match="TLS needs an https"):
        run(snippets, ["snippets", "--settings", str(settings), *tls])
    settings.write_text(SNIPPET_SETTINGS.replace("image_port = 8011", "image_port = 0"))
    run(snippets, ["snippets", "--settings", str(settings)])
    out = capsys.readouterr().out
    assert "proxy_pass" not in out and "ProxyPass" not in out and "embedded server, which is off" in out


def test_nginx_serves_the_tree_with_the_generated_config(tree, tmp_path):
    """nginx (the Debian package) started with the generated server block, under a URL prefix."""
    from buildbot_kernel.imagetree.index import TreeIndex
    from buildbot_kernel.imagetree.snippets import standalone_nginx_conf

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.skip("nginx is not installed (scripts/install-deps installs it)")
    root, a, b = tree
    port = free_port()
    base = f"http://127.0.0.1:{port}/kernels/"
    TreeIndex(root, base).regenerate()
    work = tmp_path / "nginx"
    work.mkdir()
    (work / "nginx.conf").write_text(standalone_nginx_conf(str(root), base, str(work), workers="1"))
    proc = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "index.json", timeout=5) as r:
                    doc = json.loads(r.read())
                    assert r.headers["Cache-Control"] == "no-cache"
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.05)
        assert doc["images"][0]["url"] == f"{base}next/{b.name}/"
        with urllib.request.urlopen(doc["images"][0]["url"] + "vmlinuz", timeout=5) as r:
            assert hashlib.sha256(r.read()).hexdigest() == doc["images"][0]["files"]["vmlinuz"]["sha256"]
        req = urllib.request.Request(base + f"next/{b.name}/vmlinuz", headers={"Range": "bytes=0-9"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 206 and len(r.read()) == 10
        for hidden in (".incoming/", ".state/index-cache.json", "next/half-copied/../../.trash/"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(base + hidden, timeout=5)
            assert e.value.code in (403, 404)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
