"""What the two-master tests share: the settings of masters a and b (one PostgreSQL database, one
crossbar router, one image tree and one state directory on a shared directory standing in for NFS; their
own ports), their workers, and which master is which."""

from __future__ import annotations

from pathlib import Path

from integration.harness import FixtureRepo, Master, free_port, settings_text

BRANCH = "drm-intel-fixes"
SUCCESS = 0
TIMEOUT = 20  # [server] master_timeout: the least a loaded CI machine keeps both masters beating


def two_settings(tmp_path: Path, repo: FixtureRepo, db_url: str, router: str, workers: str = "") -> list:
    """(settings text, ports) of masters a and b: their own ports, everything else shared."""
    shared = tmp_path / "shared"
    out = []
    base_url = None
    for _ in "ab":
        ports = {"web": free_port(), "worker": free_port(), "image": free_port()}
        base_url = base_url or f"http://127.0.0.1:{ports['image']}"  # one URL in the index, whoever writes it
        text = settings_text(str(repo.bare), (BRANCH,), ports, db_url=db_url, worker=False, extra=workers,
                             server_extra=f'mq_router = "{router}"\nstate_dir = "{shared / "state"}"\n'
                                          f"master_timeout = {TIMEOUT}\n")
        text = text.replace('root = "images"', f'root = "{shared / "images"}"')
        text = text.replace(f'base_url = "http://127.0.0.1:{ports["image"]}"', f'base_url = "{base_url}"')
        out.append((text, ports))
    return out


def worker_toml(*names: str) -> str:
    return "".join(f'[[worker]]\nname = "{n}"\npassword = "pw"\nmax_builds = 3\n' for n in names)


def new_master(base: Path, text: str, upgrade: bool = False) -> Master:
    base.mkdir()
    return Master(base, text, upgrade=upgrade)


def master_ids(master: Master) -> dict[str, int]:
    """masterid by master directory (Buildbot names a master ``<host>:<its directory>``)."""
    return {m["name"].split(":", 1)[1]: m["masterid"] for m in master.get("masters")["masters"] if m["active"]}


def planted_history(repo: FixtureRepo) -> list[str]:
    """Four commits on BRANCH after its head, pushed; the third is the culprit (index 3)."""
    shas = repo.plant_regression(BRANCH, 4, culprit=3)
    repo.push(BRANCH)
    return shas
