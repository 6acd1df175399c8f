"""Bisection over kernel commits: a pure engine (git + state), the ``git bisect log`` file, image lookup
in the server's index.json and the local-command tester. No Buildbot or Twisted here, so the same code
serves the Buildbot "bisect" builder and the ``buildbot-kernel bisect`` shell command."""
