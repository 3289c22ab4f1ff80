"""The appliance's own settings that the trust administrator changes in the browser: the address of
the web UI (for links in e-mails and on the block page) and the mail server. They live in the
settings table; changing them is audited (the mail password is never logged or shown)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from appliance.audit import Change
from appliance.store import Store
from webui import fields
from webui.errors import InputError

SECURITY = ("starttls", "tls", "none")
KEYS = (
    "webui.url",
    "mail.host",
    "mail.port",
    "mail.security",
    "mail.username",
    "mail.password",
    "mail.sender",
)


@dataclass(frozen=True)
class Settings:
    url: str  # e.g. https://gateway.school.example (no trailing slash); set at first start
    mail_host: str  # empty: no mail server yet (messages wait in the outbox)
    mail_port: int
    mail_security: str  # "starttls", "tls" (implicit TLS, port 465) or "none"
    mail_username: str
    mail_password: str
    mail_sender: str

    def public(self) -> dict[str, Any]:
        """Everything but the password (for pages, the API and the audit log)."""
        return {
            "url": self.url,
            "mail_host": self.mail_host,
            "mail_port": self.mail_port,
            "mail_security": self.mail_security,
            "mail_username": self.mail_username,
            "mail_password_set": bool(self.mail_password),
            "mail_sender": self.mail_sender,
        }


def load(store: Store) -> Settings:
    return Settings(
        url=store.setting("webui.url", ""),
        mail_host=store.setting("mail.host", ""),
        mail_port=int(store.setting("mail.port", "587")),
        mail_security=store.setting("mail.security", "starttls"),
        mail_username=store.setting("mail.username", ""),
        mail_password=store.setting("mail.password", ""),
        mail_sender=store.setting("mail.sender", ""),
    )


def set_default_url(ch: Change, hostname: str) -> None:
    """At first start: the address staff will most likely use, until the administrator sets one."""
    if not load(ch.store).url:
        host = f"[{hostname}]" if ":" in hostname else hostname
        save(ch, {"url": f"https://{host}"})


def save(ch: Change, values: dict[str, Any]) -> Settings:
    """Validates and stores the settings given (others kept). An empty mail_password keeps the old one;
    clear_mail_password removes it."""
    before = load(ch.store)
    new: dict[str, str] = {}
    if "url" in values:
        url = fields.text(values["url"], "Web address of this appliance", 200).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.path or parts.query:
            raise InputError("Web address of this appliance: like https://gateway.school.example")
        new["webui.url"] = url
    if "mail_host" in values:
        new["mail.host"] = fields.text(values["mail_host"], "Mail server", 253, required=False)
    if "mail_port" in values:
        raw = str(values["mail_port"]).strip()
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise InputError("Mail server port: a number from 1 to 65535 (usually 587)")
        new["mail.port"] = raw
    if "mail_security" in values:
        new["mail.security"] = fields.choice(values["mail_security"], "Connection security", SECURITY)
    if "mail_username" in values:
        new["mail.username"] = fields.text(values["mail_username"], "Mail user name", 254, required=False)
    if values.get("mail_password"):
        new["mail.password"] = fields.text(values["mail_password"], "Mail password", 256)
    if values.get("clear_mail_password"):
        new["mail.password"] = ""
    if "mail_sender" in values:
        sender = fields.text(values["mail_sender"], "Send e-mail from", 254, required=False)
        new["mail.sender"] = fields.email(sender) if sender else ""
    for key, value in new.items():
        ch.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))
    after = load(ch.store)
    ch.log("settings.change", "web UI and mail settings", before.public(), after.public())
    return after
