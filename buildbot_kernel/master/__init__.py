"""Buildbot glue: turning validated settings into a BuildmasterConfig, services and schedulers."""
