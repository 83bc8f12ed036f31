"""Mail about unhandled exceptions (the classic registry's `email_exceptions`).

A request that fails with an exception no handler answers (the client gets a 500) is mailed to
the operator: at most one mail a minute per process, so that a failure on every request cannot
flood a mailbox or the SMTP server; the exceptions in between are counted, and the next mail
says how many. Mails are sent from a thread, never from the event loop, and hold the method,
the path (no query string: it can carry secrets), the exception and its traceback, with the
passwords of URLs in them masked; no request header, so no credentials.
"""

from __future__ import annotations

import logging
import math
import os
import re
import smtplib
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable
from email.message import EmailMessage
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from portside.config.mail import EmailSettings

log = logging.getLogger("portside.server")

MAIL_INTERVAL: Final = 60.0
SMTP_TIMEOUT: Final = 30.0
SUBJECT: Final = "Docker registry exception"  # the classic registry's subject
_URL_PASSWORD: Final = re.compile(r"(://[^/\s:@]+):[^/\s@]+@")


class ExceptionMailer:
    def __init__(
        self,
        settings: EmailSettings,
        interval: float = MAIL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next = -math.inf
        self._unsent = 0

    def report(self, method: str, path: str, error: BaseException) -> threading.Thread | None:
        """Mail `error` from a new thread, returned; None when the last mail is too recent."""
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._unsent += 1
                return None
            unsent, self._unsent, self._next = self._unsent, 0, now + self.interval
        message = self._message(method, path, error, unsent)
        thread = threading.Thread(target=self._send, args=(message,), name="portside-mail")
        thread.daemon = True  # a mail in flight does not hold up a stopping worker
        thread.start()
        return thread

    def _message(self, method: str, path: str, error: BaseException, unsent: int) -> EmailMessage:
        host = socket.gethostname()
        lines = [
            f"{method} {path[:300]} on {host} (process {os.getpid()}) failed with an unhandled "
            f"exception; the client got a 500.",
        ]
        if unsent:
            lines.append(
                f"{unsent} more unhandled exception(s) since the previous mail were not mailed "
                f"(at most one mail every {self.interval:g} seconds); the log has them."
            )
        lines += ["", *traceback.format_exception(error)]
        message = EmailMessage()
        message["Subject"] = f"{SUBJECT}: {type(error).__name__} on {host}"
        message["From"] = self.settings.from_addr
        message["To"] = ", ".join(self.settings.to_addr)
        message.set_content(_URL_PASSWORD.sub(r"\1:***@", "\n".join(lines)))
        return message

    def _send(self, message: EmailMessage) -> None:
        settings = self.settings
        assert settings.smtp_host is not None
        try:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
                if settings.smtp_secure:
                    smtp.starttls(context=ssl.create_default_context())
                if settings.smtp_login is not None and settings.smtp_password is not None:
                    smtp.login(settings.smtp_login, settings.smtp_password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            log.warning(
                "could not mail an exception through %s:%d: %s",
                settings.smtp_host,
                settings.smtp_port,
                error,
            )


class ExceptionMail:
    """Reports every exception that leaves the app to the mailer, then lets it go on."""

    def __init__(self, app: ASGIApp, mailer: ExceptionMailer) -> None:
        self.app = app
        self.mailer = mailer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            self.mailer.report(scope["method"], scope["path"], error)
            raise
