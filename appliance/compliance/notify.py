"""E-mail of each report, with its PDF attached, through the mail server set up in the web UI's
settings (the `mail.*` settings). The DSL gets every report; IT too when there are findings, so that
failures reach both at once. Recipients are the web UI's DSL and IT accounts, plus compliance.toml
[report] email. A message that cannot be sent is recorded on the report and sent at the timer's next
run."""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid

from appliance.compliance import render, reports
from appliance.compliance.testset import TestSet
from appliance.config import Config
from appliance.store import Store

TIMEOUT = 15.0


def recipients(store: Store, tests: TestSet, failures: bool) -> list[str]:
    roles = ("dsl", "it") if failures else ("dsl",)
    marks = ", ".join("?" * len(roles))
    rows = store.db.execute(
        f"SELECT email FROM web_users WHERE disabled = 0 AND role IN ({marks}) ORDER BY id", roles
    )
    found = [*tests.email, *(r["email"] for r in rows)]
    return list(dict.fromkeys(a for a in found if a))


def message(config: Config, report: reports.Stored, sender: str, to: list[str], pdf: bytes) -> EmailMessage:
    doc = report.document
    failures = report.findings
    verdict = f"{len(failures)} FINDINGS" if failures else "no findings"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"Filtering compliance report {report.id} for {config.appliance.name}: {verdict}"
    msg["Message-ID"] = make_msgid(domain=sender.split("@")[-1])
    lines = [
        f"The appliance tested the school's filtering from inside each group's network ({doc['trigger']}).",
        f"Result: {verdict}. The full report is attached as a PDF and is in the web UI.",
        "",
    ]
    lines += [
        f"{n}. {f['group']}: {f['target']} {f['check']}: saw {f['observed']}; {f['why']}"
        for n, f in enumerate(failures, 1)
    ]
    lines += ["", f"Report SHA-256 {report.sha256} (recorded in the audit trail)."]
    msg.set_content("\n".join(lines))
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"{report.stem}.pdf")
    return msg


def _connect(store: Store) -> tuple[smtplib.SMTP, str]:
    host, sender = store.setting("mail.host", ""), store.setting("mail.sender", "")
    if not host or not sender:
        raise OSError("no mail server is set up (web UI, Settings)")
    port, security = int(store.setting("mail.port", "587")), store.setting("mail.security", "starttls")
    context = ssl.create_default_context()
    if security == "tls":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=TIMEOUT)
        if security == "starttls":
            smtp.starttls(context=context)
    user = store.setting("mail.username", "")
    if user:
        smtp.login(user, store.setting("mail.password", ""))
    return smtp, sender


def send(store: Store, config: Config, tests: TestSet, report: reports.Stored) -> str | None:
    """Sends the report; returns the error (also recorded on the report) or None."""
    to = recipients(store, tests, bool(report.failures))
    error = None
    if not to:
        error = "no one to send it to: give the DSL a web UI account, or set [report] email"
    else:
        try:
            smtp, sender = _connect(store)
            with smtp:
                smtp.send_message(message(config, report, sender, to, render.as_pdf(store, report)))
        except (OSError, smtplib.SMTPException) as e:
            error = f"cannot send the report by e-mail: {e}"
    reports.record_mail(store, report.id, None if error else datetime.now(UTC), error)
    return error


def retry(store: Store, config: Config, tests: TestSet) -> None:
    """Sends the reports whose e-mail failed before."""
    for report in reports.listing(store):
        if report.mailed is None and report.mail_error:
            send(store, config, tests, report)
