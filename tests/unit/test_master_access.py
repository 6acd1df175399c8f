"""The master configuration made from the access settings: where each listener binds, which force
schedulers maintainers get, and the bisect start step's own command check."""


import bcrypt
import pytest
from buildbot.schedulers.forcesched import ForceScheduler
from buildbot.www.authz.endpointmatchers import AnyControlEndpointMatcher, AnyEndpointMatcher

from buildbot_kernel.master import auth
from buildbot_kernel.master.config import make_config, strport
from buildbot_kernel.resources import shipped
from buildbot_kernel.settings import Auth
from buildbot_kernel.steps import bisect_test, bisect_testers

SETTINGS = shipped("settings.toml").read_text().replace(
    '"local-worker"', '"a-real-secret"')
AUTH = '\n[auth]\nhtpasswd = "users.htpasswd"\nadmins = ["alice"]\nmaintainers = ["bob"]\nanonymous = "{}"\n'


def config(tmp_path, server="", extra=""):
    (tmp_path / "users.htpasswd").write_text(f"alice:{bcrypt.hashpw(b'x', bcrypt.gensalt(4)).decode()}\n")
    path = tmp_path / "settings.toml"
    path.write_text(SETTINGS.replace("image_port = 8011", f"image_port = 8011\n{server}") + extra)
    return make_config(str(tmp_path / "master"), str(path))


def test_each_listener_on_its_own_address(tmp_path):
    c = config(tmp_path, 'bind = "127.0.0.2"\nweb_bind = "0.0.0.0"\nworker_bind = "::"', AUTH.format("read"))
    assert c["www"]["port"] == "tcp:8010:interface=0.0.0.0"
    assert c["protocols"]["pb"]["port"] == r"tcp:9989:interface=\:\:"
    image_server = [s for s in c["services"] if type(s).__name__ == "ImageServerService"][0]
    assert image_server._config_kwargs["interface"] == "127.0.0.2"  # image_bind defaults to bind
    c = config(tmp_path, 'image_bind = "0.0.0.0"')
    image_server = [s for s in c["services"] if type(s).__name__ == "ImageServerService"][0]
    assert image_server._config_kwargs["interface"] == "0.0.0.0"
    assert c["www"]["port"] == "tcp:8010:interface=127.0.0.1"
    assert strport(8011, "::1") == r"tcp:8011:interface=\:\:1"


def test_without_auth_no_auth_is_configured(tmp_path):
    c = config(tmp_path)
    assert "auth" not in c["www"] and "authz" not in c["www"]


@pytest.mark.parametrize("anonymous, reads_need_login", [("read", False), ("none", True)])
def test_rules(tmp_path, anonymous, reads_need_login):
    c = config(tmp_path, extra=AUTH.format(anonymous))
    assert isinstance(c["www"]["auth"], auth.BcryptHtpasswdAuth)
    rules = c["www"]["authz"].allowRules
    assert isinstance(rules[0], auth.FreeFormCommandMatcher) and rules[0].role == auth.ADMIN
    maintainer = [r for r in rules if isinstance(r, auth.ForceSchedulerMatcher)][0]
    forced = {s.name for s in c["schedulers"] if isinstance(s, ForceScheduler)}
    # every force scheduler the configuration has is a maintainer's (branch builds, heads, bisect) ...
    assert maintainer.schedulers == forced and {"bisect", "heads-now"} <= forced
    # ... and anything else (a future one) falls to the admins-only rule
    assert any(isinstance(r, AnyControlEndpointMatcher) and r.role == auth.ADMIN and r.defaultDeny for r in rules)
    assert any(isinstance(r, AnyEndpointMatcher) and r.role == auth.USER for r in rules) == reads_need_login
    dashboards = [d["app"] for d in c["www"]["plugins"]["wsgi_dashboards"]]
    assert all(isinstance(app, auth.LoginRequired) for app in dashboards) == reads_need_login


def test_free_form_command_values():
    assert not auth.has_command(None) and not auth.has_command("  ") and not auth.has_command([""])
    assert auth.has_command("id") and auth.has_command(["", "id"])


def test_start_step_check_of_a_command():
    settings = Auth(htpasswd="users.htpasswd", admins=["alice"], maintainers=["bob"])
    assert auth.may_run_command(None, "anonymous")  # no [auth]: loopback only, everyone is admin
    assert auth.may_run_command(settings, "alice")
    assert not auth.may_run_command(settings, "bob") and not auth.may_run_command(settings, None)


def test_the_tester_sets_the_timeout_property_the_test_builder_reads():
    assert bisect_testers.TIMEOUT_PROPERTY == bisect_test.TIMEOUT_PROPERTY
