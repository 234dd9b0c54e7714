"""Mail: digest MIME messages (RFC 8058 headers); delivery by pooled SMTP, Maildir or .eml files.

``message`` builds the bytes; ``delivery`` is the Mailer protocol and picks a mailer from
the config; ``smtp`` and ``files`` are the mailers.
"""

from feedsvc.mail.delivery import Mailer, open_mailer
from feedsvc.mail.files import FileMailer, MaildirMailer, eml_name
from feedsvc.mail.message import MessageParts, build_message, envelope_address, header_text
from feedsvc.mail.smtp import RateLimiter, SmtpMailer

__all__ = [
    "FileMailer",
    "MaildirMailer",
    "Mailer",
    "MessageParts",
    "RateLimiter",
    "SmtpMailer",
    "build_message",
    "eml_name",
    "envelope_address",
    "header_text",
    "open_mailer",
]
