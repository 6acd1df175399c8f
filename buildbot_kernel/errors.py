"""The one base of the errors buildbot-kernel raises on purpose.

``except BuildbotKernelError`` catches every refusal and failure this package names (a bad setting, a
git failure, a refused request, ...) and nothing else, so a caller can tell "we said no, here is why"
from a bug.  Each error keeps the built-in base its callers already catch (``ValueError``,
``KeyError``, ``RuntimeError``, ...) next to this one.
"""


class BuildbotKernelError(Exception):
    """Base of every error class in buildbot_kernel."""
