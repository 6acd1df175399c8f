"""The fault suite: faults injected in the middle of real work on a real master, real workers, the
fixture tree, PostgreSQL, an SMTP server, network namespaces and a QEMU machine.

Each case is a row of README.md "When things fail".
"""
