"""E-mail notifications through the school's mail server.

Messages are first written to the outbox table, in the same transaction as the change they report,
so none is lost when the mail server is down or not set up yet; flush() sends what is waiting and
records each failure, and the sender thread (webui.sender) calls it again later."""

from __future__ import annotations

import smtplib
import sqlite3
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid

from appliance.store import Store, iso
from webui import settings
from webui.accounts import User
from webui.times import parse

TIMEOUT = 15.0
SIGNATURE = "\n\n-- \nThis message was sent by the school's internet filtering appliance."


@dataclass(frozen=True)
class Waiting:
    id: int
    created: datetime
    recipient: str
    subject: str
    attempts: int
    last_error: str | None


def enqueue(
    db: sqlite3.Connection, now: datetime, recipients: Iterable[User], subject: str, body: str
) -> None:
    """Queues one message per recipient (each sees only their own address), inside the caller's
    transaction, so the message exists exactly when the change it reports does."""
    for address in dict.fromkeys(u.email for u in recipients if not u.disabled):
        db.execute(
            "INSERT INTO outbox (created, recipient, subject, body) VALUES (?, ?, ?, ?)",
            (iso(now), address, subject, body + SIGNATURE),
        )


def enqueue_test(db: sqlite3.Connection, now: datetime, user: User) -> None:
    enqueue(
        db,
        now,
        [user],
        "Test message from the school internet gateway",
        "If you can read this, the appliance can send e-mail: unblock requests and alerts will reach people.",
    )


def waiting(store: Store) -> list[Waiting]:
    rows = store.db.execute("SELECT * FROM outbox WHERE sent IS NULL ORDER BY id")
    return [
        Waiting(r["id"], parse(r["created"]), r["recipient"], r["subject"], r["attempts"], r["last_error"])  # type: ignore[arg-type]
        for r in rows
    ]


def _connect(cfg: settings.Settings) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if cfg.mail_security == "tls":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.mail_host, cfg.mail_port, timeout=TIMEOUT, context=context)
    else:
        smtp = smtplib.SMTP(cfg.mail_host, cfg.mail_port, timeout=TIMEOUT)
        if cfg.mail_security == "starttls":
            smtp.starttls(context=context)
    if cfg.mail_username:
        smtp.login(cfg.mail_username, cfg.mail_password)
    return smtp


def flush(store: Store, now: datetime) -> int:
    """Sends every waiting message over one connection; returns how many went. A failure is recorded
    on the message (shown on the settings page) and it is tried again next time."""
    rows = store.db.execute("SELECT * FROM outbox WHERE sent IS NULL ORDER BY id").fetchall()
    if not rows:
        return 0
    cfg = settings.load(store)
    if not cfg.mail_host or not cfg.mail_sender:
        store.db.execute(
            "UPDATE outbox SET last_error = ? WHERE sent IS NULL",
            ("no mail server is set up yet (Settings)",),
        )
        return 0
    sent = 0
    try:
        smtp = _connect(cfg)
    except (OSError, smtplib.SMTPException) as e:
        store.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE sent IS NULL",
            (f"cannot reach the mail server {cfg.mail_host}:{cfg.mail_port}: {e}",),
        )
        return 0
    with smtp:
        for row in rows:
            message = EmailMessage()
            message["From"] = cfg.mail_sender
            message["To"] = row["recipient"]
            message["Subject"] = row["subject"]
            message["Message-ID"] = make_msgid(domain=cfg.mail_sender.split("@")[-1])
            message.set_content(row["body"])
            try:
                smtp.send_message(message)
            except (OSError, smtplib.SMTPException) as e:
                store.db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                    (f"the mail server refused it: {e}", row["id"]),
                )
                continue
            store.db.execute(
                "UPDATE outbox SET sent = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                (iso(now), row["id"]),
            )
            sent += 1
    return sent
