"""Packaging for buildbot-kernel: a continuous kernel image build server on Buildbot."""

from setuptools import find_packages, setup

setup(
    name="buildbot-kernel",
    version="0.1.0",
    description="Continuous kernel image builds, an image tree served by URL, "
    "and kexec-based bisection on Buildbot",
    packages=find_packages(include=["buildbot_kernel", "buildbot_kernel.*"]),
    include_package_data=True,
    package_data={"buildbot_kernel": ["data/*", "formats/*.ini"]},
    python_requires=">=3.11",
    install_requires=[
        "buildbot>=4.0",
        "buildbot-www>=4.0",
        "buildbot-worker>=4.0",
        "buildbot-waterfall-view>=4.0",
        "buildbot-console-view>=4.0",
        "buildbot-grid-view>=4.0",
        "buildbot-wsgi-dashboards>=4.0",
        # Buildbot 4.3 inserts an empty executemany for a buildset without sourcestamps; SQLAlchemy 2.1
        # turns that into "INSERT ... DEFAULT VALUES" and the NOT NULL constraint fails (seen here with
        # the startup scheduler). 2.0 is what Buildbot 4.3 was tested with.
        "sqlalchemy>=1.4,<2.1",
        # PostgreSQL for a larger farm: db_url = "postgresql+psycopg://..." (README "Growing past one machine")
        "psycopg[binary]>=3.1",
        "twisted",
        "treq",
        "GitPython>=3.1",
        "jinja2>=3.0",
        "pygal>=3.0",  # the Kernels dashboard's charts (server-rendered SVG)
        "watchdog>=3.0",
        # [auth] htpasswd files: bcrypt hashes (`htpasswd -B`), checked with bcrypt, never compared as text
        "bcrypt>=4.0",
    ],
    extras_require={
        # aiosmtpd: the real SMTP server the notification tests receive mails with
        "test": ["pytest", "pytest-timeout", "hypothesis", "ruff", "selenium>=4.10", "aiosmtpd>=1.4"],
    },
    entry_points={"console_scripts": ["buildbot-kernel = buildbot_kernel.cli:main"]},
)
