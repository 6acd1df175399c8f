"""buildbot-kernel: continuous kernel image builds, an image tree served by URL, kexec bisection.

Pure logic (naming, settings, index, bisect engine) lives in modules that import neither Buildbot nor
Twisted, so it can be tested without a reactor; the glue lives in ``buildbot_kernel.master`` and the
``steps``/``services`` modules.
"""
