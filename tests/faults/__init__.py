"""The fault suite: faults injected in the middle of real work on a real master and real workers.

Here: a worker SIGKILLed mid-build, the master SIGKILLed mid-bisect and between upload and publish, the
image disk full during publish.  To come, with the parts they need: the network between a worker and the
master cut mid-build (network namespaces), a test machine's power lost mid-test (QEMU killed), the
database server restarted mid-run (PostgreSQL), the mail server down when a culprit is found.
"""
