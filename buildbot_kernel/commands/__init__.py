"""Sub-commands of the ``buildbot-kernel`` console script (see ``buildbot_kernel.cli``)."""
