"""The published image tree: package contract, index, retention, watchdog and the embedded server.

Everything here except ``server.py`` and ``watcher.py`` is pure Python (no Twisted), so the master, the
command line and an admin's script all read and write the tree through the same functions.
"""
