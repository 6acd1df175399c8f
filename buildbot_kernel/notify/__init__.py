"""Mail notifications on Buildbot's reporters framework (README.md "Notifications").

``compose`` makes safe messages out of hostile text, ``texts`` says what each mail says, ``outbox`` keeps
mails until the server took them, ``reporter`` is the Buildbot glue (generators, formatters, the mail
reporter with its retry loop).
"""
