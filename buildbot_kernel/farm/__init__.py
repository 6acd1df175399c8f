"""The test farm: two-stage kexec boot of test machines (README "Test farm").

Pure parts: :mod:`instructions` (boot instructions, tokens), :mod:`registry` (machine state, persisted),
:mod:`steplogic` (attempts -> verdict).  Twisted parts: :mod:`http` (``/machines`` Resource),
:mod:`driver` (``MachineDriver.run_step``), :mod:`qemu` (the ``qemu`` machine type).
"""
