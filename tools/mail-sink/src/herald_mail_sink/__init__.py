"""herald-mail-sink: a development SMTP server that stores every message it receives.

A package of its own so that aiosmtpd, a server, is never a dependency of the email service.
"""
