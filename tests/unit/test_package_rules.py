"""Rules for the whole package: one exception base, no module-level mutable state, no process-wide
side effect on import."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import buildbot_kernel
from buildbot_kernel.errors import BuildbotKernelError

PACKAGE = Path(buildbot_kernel.__file__).parent
MUTATORS = {"append", "extend", "insert", "pop", "popitem", "clear", "update", "setdefault", "add", "discard",
            "remove", "__setitem__"}
LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Event,
              threading.Semaphore)


def modules():
    return [importlib.import_module(m.name) for m in pkgutil.walk_packages(buildbot_kernel.__path__,
                                                                            "buildbot_kernel.")]


def test_every_error_class_derives_from_the_one_base_and_keeps_its_builtin_base():
    errors = {f"{mod.__name__}.{name}": cls for mod in modules() for name, cls in vars(mod).items()
              if inspect.isclass(cls) and cls.__module__ == mod.__name__ and issubclass(cls, BaseException)}
    assert len(errors) >= 20  # the scan found them (the package has about two dozen)
    assert [name for name, cls in errors.items() if not issubclass(cls, BuildbotKernelError)] == []
    # callers catch these by their built-in base
    from buildbot_kernel.bisect.engine import BisectInputError
    from buildbot_kernel.farm.registry import UnknownMachine
    from buildbot_kernel.gitrepo import GitError
    from buildbot_kernel.imagetree.lookup import NotFound
    assert issubclass(BisectInputError, ValueError) and issubclass(UnknownMachine, KeyError)
    assert issubclass(GitError, RuntimeError) and issubclass(NotFound, LookupError)


def _local_names(func: ast.AST) -> set[str]:
    args = func.args
    names = {a.arg for a in args.args + args.kwonlyargs + args.posonlyargs}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def module_state_writes(source: str) -> list[str]:
    """Places where a function changes a module-level binding: ``global``, ``NAME[k] = v``,
    ``NAME.append(...)`` and the like on a name the module binds (and the function does not)."""
    tree = ast.parse(source)
    top = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
           for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(func, ast.Lambda):
            continue
        local = _local_names(func)
        for node in ast.walk(func):
            if isinstance(node, ast.Global):
                found.append(f"line {node.lineno}: global {', '.join(node.names)}")
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else \
                node.targets if isinstance(node, ast.Delete) else []
            for t in targets:
                if isinstance(t, (ast.Subscript, ast.Attribute)) and isinstance(t.value, ast.Name) \
                        and t.value.id in top and t.value.id not in local:
                    found.append(f"line {node.lineno}: {t.value.id} changed")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in MUTATORS and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id in top and node.func.value.id not in local:
                found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}()")
    return found


def test_the_scan_finds_module_state():
    src = ("_cache = {}\nSEEN = []\nN = 0\n"
           "def f(k):\n    _cache[k] = 1\n    SEEN.append(k)\n"
           "def g():\n    global N\n    N += 1\n"
           "def h(SEEN):\n    SEEN.append(1)\n    out = {}\n    out['a'] = 1\n")
    assert module_state_writes(src) == ["line 5: _cache changed", "line 6: SEEN.append()", "line 8: global N"]


def test_no_module_level_mutable_state():
    offences = {str(p.relative_to(PACKAGE)): module_state_writes(p.read_text(encoding="utf-8"))
                for p in sorted(PACKAGE.rglob("*.py"))}
    assert {k: v for k, v in offences.items() if v} == {}
    locks = [f"{mod.__name__}.{name}" for mod in modules() for name, value in vars(mod).items()
             if isinstance(value, LOCK_TYPES)]
    assert locks == []


def test_importing_the_package_changes_no_warning_filter():
    """A fresh interpreter: every module imported, the process-wide warning filters are as before."""
    code = ("import importlib, pkgutil, warnings, buildbot_kernel\n"
            "before = list(warnings.filters)\n"
            "for m in pkgutil.walk_packages(buildbot_kernel.__path__, 'buildbot_kernel.'):\n"
            "    importlib.import_module(m.name)\n"
            "added = [f for f in warnings.filters if f not in before]\n"
            "print(repr([(f[0], getattr(f[1], 'pattern', f[1]), f[3] and getattr(f[3], 'pattern', f[3])) "
            "for f in added]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    added = out.stdout.strip().splitlines()[-1]
    assert "watchdog" not in added, added  # the watcher installs its filter when it starts, not on import


def test_the_watcher_filter_is_narrow_and_installed_once():
    from buildbot_kernel.imagetree.watcher import quiet_rewatch_warning
    with warnings.catch_warnings():
        quiet_rewatch_warning()
        quiet_rewatch_warning()
        ours = [f for f in warnings.filters if getattr(f[1], "pattern", "") == "Callback with id .* already exists"]
        assert len(ours) == 1
        action, _, category, module, _ = ours[0]
        assert (action, category, module.pattern) == ("ignore", RuntimeWarning, r"watchdog(\.|$)")
