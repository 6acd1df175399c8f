"""Mail notifications on Buildbot's reporters framework (README.md "Notifications").

``compose`` makes safe messages out of hostile text, ``texts`` says what each mail says, ``formatters``
decide which finished build gets which mail, ``mailer`` keeps mails in the ``outbox`` until the server
took them, ``reporter`` wires it all from ``[notify]``.
"""
