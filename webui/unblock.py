"""Unblock requests: a member of staff asks for a blocked site to be allowed for some groups, for a
while; an IT technician reviews the technical side, then the DSL approves the safeguarding side; only
then is the allow put in force, through the policy code, with its expiry.

    waiting for IT --IT approves--> waiting for the DSL --DSL approves--> approved (allow in force)
          |                               |
          +--IT or the DSL refuses--------+--> refused (with the reason)
          +--the requester withdraws------+--> withdrawn

Nobody approves or refuses their own request, and the two approvals are by two different people.
Sites the IWF or CTIRU lists hold, and anything the trust has locked, cannot be requested: the verdict
and its layer come from the policy's explain. Each step is one audited transaction, and the e-mails
it causes are queued in the same transaction (webui.mail)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from appliance import audit
from appliance.audit import Change
from appliance.policy import rules, timetable, upkeep
from appliance.policy.explain import Explanation
from appliance.policy.model import GROUPS, Layer, PolicyError
from appliance.policy.schedules import Term
from appliance.store import Store, iso
from fastpath.names import normalise
from webui import accounts, fields, mail, policy_ops, settings
from webui.accounts import User
from webui.errors import InputError, NotAllowed, NotFound
from webui.roles import Permission
from webui.times import local, parse

WAITING_IT = "waiting_it"
WAITING_DSL = "waiting_dsl"
APPROVED = "approved"
REFUSED = "refused"
WITHDRAWN = "withdrawn"
STATUSES = (WAITING_IT, WAITING_DSL, APPROVED, REFUSED, WITHDRAWN)
WAITING = (WAITING_IT, WAITING_DSL)
SEEN_AT = ("dns", "tls", "quic", "http")
MAX_DAYS = 366  # an unblock is for a period of study, not for ever
REASON_LIMIT = 2000
_APPROVED_WITHOUT_NOTE = "approved (no note given)"

PADLOCKED_WORDS = (
    "This site is on a list of illegal content that every UK school must block by law. Nobody in the "
    "school can unblock it, so it cannot be requested. If you think it is listed by mistake, tell your "
    "DSL."
)
TRUST_LOCKED_WORDS = (
    "The trust has locked this site for {groups}. The school cannot unblock it there, so it cannot be "
    "requested for {them}. If you think this is wrong, ask your IT team to raise it with the trust."
)


@dataclass(frozen=True)
class GroupVerdict:
    """What the policy in force does with the site for one group, in a few plain words."""

    group: str
    blocked: bool
    locked: bool
    padlocked: bool  # on the IWF or CTIRU lists (locked by law, for every group)
    why: str

    @property
    def requestable(self) -> bool:
        return self.blocked and not self.locked


@dataclass(frozen=True)
class Assessment:
    site: str
    groups: list[GroupVerdict]

    def verdict(self, group: str) -> GroupVerdict:
        return next(v for v in self.groups if v.group == group)

    def locked_message(self, among: list[str] | None = None) -> str | None:
        """Why the site cannot be requested for the locked groups (of among, default all), or None."""
        locked = [v for v in self.groups if v.locked and (among is None or v.group in among)]
        if not locked:
            return None
        if any(v.padlocked for v in locked):
            return PADLOCKED_WORDS
        names = [v.group for v in locked]
        groups = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        return TRUST_LOCKED_WORDS.format(groups=groups, them="it" if len(names) == 1 else "them")

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "groups": [
                {
                    "group": v.group,
                    "blocked": v.blocked,
                    "locked": v.locked,
                    "requestable": v.requestable,
                    "why": v.why,
                }
                for v in self.groups
            ],
            "locked_message": self.locked_message(),
        }


def _why(e: Explanation) -> GroupVerdict:
    group = e.group
    if e.action == "allow":
        return GroupVerdict(group, False, False, False, "Not blocked.")
    if e.layer == Layer.PADLOCKED:
        return GroupVerdict(group, True, True, True, "Locked by law: on a list of illegal content.")
    if e.layer == Layer.TRUST_LOCKED:
        what = f" ({', '.join(e.categories)})" if e.categories else ""
        return GroupVerdict(group, True, True, False, f"Locked by the trust{what}.")
    exam = f"{group} is in exam mode, so the exams policy applies. " if e.policy_group != group else ""
    if e.layer == Layer.SCHOOL and e.rule:
        return GroupVerdict(group, True, False, False, f"{exam}Blocked by a school rule: {e.rule['reason']}")
    if e.reason == "DEFAULT":
        why = f"{exam}{e.policy_group} can only reach sites the school has allowed."
    else:
        why = f"{exam}It is in a category blocked for {e.policy_group}: {', '.join(e.categories)}."
    return GroupVerdict(group, True, False, False, why)


def site_name(value: object) -> str:
    raw = fields.text(value, "Site", 300)
    host = raw.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0] if "://" in raw else raw
    name = normalise(host)
    if name is None:
        raise InputError(f"Site: {raw!r} is not a web site name such as www.example.org")
    return name


def assess(store: Store, site: object, at: datetime) -> Assessment:
    """What the live policy does with site for every group, from the policy's own explain."""
    name = site_name(site)
    with policy_ops.explainer(store, at) as ex:
        return Assessment(name, [_why(ex.explain(name, g)) for g in GROUPS])


# --- how long ------------------------------------------------------------------------------------


def term_end(store: Store, today: date) -> Term | None:
    """The term that today is in, or else the next one (in a holiday, "this term" is the coming one)."""
    for term in timetable.terms(store):
        if term.end >= today:
            return term
    return None


def expiry(store: Store, until: object, until_date: object, now: datetime) -> tuple[datetime, str]:
    """When the allow ends (the end of the last day) and how to say so."""
    zone = store.zone()
    today = now.astimezone(zone).date()
    if until == "term":
        term = term_end(store, today)
        if term is None:
            raise InputError(
                "How long: no term dates are set up, so choose a date instead (IT can add term dates)."
            )
        last, label = term.end, f"the end of term ({term.name})"
    elif until == "date":
        last = fields.day(until_date, "Until")
        label = "the date chosen"
    else:
        raise InputError("How long: choose 'until the end of this term' or a date")
    if last < today:
        raise InputError("Until: that date has passed")
    if last > today + timedelta(days=MAX_DAYS):
        raise InputError(f"Until: at most a year ahead (by {today + timedelta(days=MAX_DAYS):%d %B %Y})")
    return rules.parse_expiry(last.isoformat(), zone), f"{label}: {last:%a %d %b %Y}"


# --- requests --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    id: int
    site: str
    groups: list[str]
    reason: str
    expires: datetime
    until_label: str
    seen_at: str | None
    blocked_why: dict[str, str]
    requester: User
    created: datetime
    status: str
    it_by: User | None
    it_at: datetime | None
    it_note: str | None
    dsl_by: User | None
    dsl_at: datetime | None
    dsl_note: str | None
    refused_by: User | None
    refused_at: datetime | None
    refused_reason: str | None
    rule_ids: list[int]
    generation: str | None
    apply_error: str | None
    rules_removed: bool  # someone removed its allow rules before the end date

    def ended(self, now: datetime) -> bool:
        return self.status == APPROVED and now >= self.expires

    def state(self, now: datetime) -> tuple[str, str]:
        """(badge class, words) for the request's state."""
        if self.status == WAITING_IT:
            return "waiting", "Waiting for IT review"
        if self.status == WAITING_DSL:
            return "waiting", "Waiting for DSL approval"
        if self.status == APPROVED:
            if self.ended(now):
                return "ended", "Ended"
            if self.rules_removed:
                return "ended", "Allow removed early (see the change log)"
            if self.generation is None:
                return "waiting", "Approved, not yet in force"
            return "approved", "Approved and in force"
        if self.status == REFUSED:
            return "refused", "Refused"
        return "withdrawn", "Withdrawn"

    def to_dict(self, now: datetime) -> dict[str, Any]:
        def who(u: User | None) -> str | None:
            return u.display_name if u else None

        return {
            "id": self.id,
            "site": self.site,
            "groups": self.groups,
            "reason": self.reason,
            "expires": self.expires.isoformat(),
            "until": self.until_label,
            "seen_at": self.seen_at,
            "blocked_why": self.blocked_why,
            "requester": who(self.requester),
            "created": self.created.isoformat(),
            "status": self.status,
            "state": self.state(now)[1],
            "it_review": {"by": who(self.it_by), "at": _opt(self.it_at), "note": self.it_note},
            "dsl_approval": {"by": who(self.dsl_by), "at": _opt(self.dsl_at), "note": self.dsl_note},
            "refused": {
                "by": who(self.refused_by),
                "at": _opt(self.refused_at),
                "reason": self.refused_reason,
            },
            "rule_ids": self.rule_ids,
            "generation": self.generation,
            "apply_error": self.apply_error,
        }


def _opt(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _from_row(store: Store, row: Any) -> Request:
    def user(uid: int | None) -> User | None:
        return accounts.get(store, uid) if uid is not None else None

    rule_ids = json.loads(row["rule_ids"] or "[]")
    kept = {
        r["id"]
        for r in store.db.execute(
            f"SELECT id FROM rules WHERE id IN ({', '.join('?' * len(rule_ids))})", rule_ids
        )
    }
    return Request(
        id=row["id"],
        site=row["site"],
        groups=json.loads(row["groups"]),
        reason=row["reason"],
        expires=datetime.fromisoformat(row["expires"]),
        until_label=row["until_label"],
        seen_at=row["seen_at"],
        blocked_why=json.loads(row["blocked_why"]),
        requester=accounts.get(store, row["requester"]),
        created=datetime.fromisoformat(row["created"]),
        status=row["status"],
        it_by=user(row["it_by"]),
        it_at=parse(row["it_at"]),
        it_note=row["it_note"],
        dsl_by=user(row["dsl_by"]),
        dsl_at=parse(row["dsl_at"]),
        dsl_note=row["dsl_note"],
        refused_by=user(row["refused_by"]),
        refused_at=parse(row["refused_at"]),
        refused_reason=row["refused_reason"],
        rule_ids=rule_ids,
        generation=row["generation"],
        apply_error=row["apply_error"],
        rules_removed=len(kept) < len(rule_ids),
    )


def get(store: Store, viewer: User, request_id: int) -> Request:
    """The request, if viewer may see it (their own, or everyone's with VIEW_REQUESTS)."""
    row = store.db.execute("SELECT * FROM unblock_requests WHERE id = ?", (request_id,)).fetchone()
    if row is None or (row["requester"] != viewer.id and not viewer.can(Permission.VIEW_REQUESTS)):
        raise NotFound(f"no unblock request {request_id}")
    return _from_row(store, row)


def listing(
    store: Store, viewer: User, mine: bool, status: str | None = None, limit: int = 200
) -> list[Request]:
    """Newest first: the viewer's own, or (with VIEW_REQUESTS) everyone's; optionally one status."""
    clauses, args = [], []
    if mine or not viewer.can(Permission.VIEW_REQUESTS):
        clauses.append("requester = ?")
        args.append(viewer.id)
    if status:
        clauses.append("status = ?")
        args.append(fields.choice(status, "Status", STATUSES))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = store.db.execute(f"SELECT * FROM unblock_requests{where} ORDER BY id DESC LIMIT ?", (*args, limit))
    return [_from_row(store, r) for r in rows]


def waiting_for(store: Store, viewer: User) -> list[Request]:
    """Requests waiting for a step viewer may take (not their own)."""
    statuses = []
    if viewer.can(Permission.REVIEW_TECHNICAL):
        statuses.append(WAITING_IT)
    if viewer.can(Permission.APPROVE_SAFEGUARDING):
        statuses.append(WAITING_DSL)
    out = []
    for status in statuses:
        out += [r for r in listing(store, viewer, mine=False, status=status) if r.requester.id != viewer.id]
    return sorted(out, key=lambda r: r.id)


def _link(store: Store, request_id: int) -> str:
    return f"{settings.load(store).url}/requests/{request_id}"


def create(
    store: Store,
    requester: User,
    site: object,
    groups: list[str],
    reason: object,
    until: object,
    until_date: object,
    seen_at: object,
    now: datetime,
) -> Request:
    assessment = assess(store, site, now)
    chosen = [g for g in GROUPS if g in groups]
    if not chosen or len(chosen) != len(set(groups)):
        raise InputError("Groups: choose at least one of the groups listed")
    not_blocked = [g for g in chosen if not assessment.verdict(g).blocked]
    if not_blocked:
        raise InputError(f"Groups: {assessment.site} is not blocked for {', '.join(not_blocked)}")
    locked = assessment.locked_message(chosen)
    if locked:
        raise InputError(locked)
    why = fields.text(reason, "Reason", REASON_LIMIT, multiline=True)
    expires, label = expiry(store, until, until_date, now)
    seen = seen_at if isinstance(seen_at, str) and seen_at in SEEN_AT else None
    for row in store.db.execute(
        "SELECT id, groups FROM unblock_requests WHERE site = ? AND status IN (?, ?)",
        (assessment.site, *WAITING),
    ):
        if set(json.loads(row["groups"])) & set(chosen):
            raise InputError(
                f"There is already a request for {assessment.site} waiting (request {row['id']}); "
                "it is being looked at."
            )
    blocked_why = {g: assessment.verdict(g).why for g in chosen}
    with audit.change(store, requester.username, why, now) as ch:
        cur = ch.db.execute(
            "INSERT INTO unblock_requests (site, groups, reason, expires, until_label, seen_at, blocked_why,"
            " requester, created, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                assessment.site,
                json.dumps(chosen),
                why,
                iso(expires),
                label,
                seen,
                json.dumps(blocked_why),
                requester.id,
                iso(now),
                WAITING_IT,
            ),
        )
        rid = int(cur.lastrowid or 0)
        request = _from_row(
            store, ch.db.execute("SELECT * FROM unblock_requests WHERE id = ?", (rid,)).fetchone()
        )
        ch.log("unblock.request", _subject(request), None, request.to_dict(now))
        zone = store.zone()
        facts = _facts(request, zone)
        mail.enqueue(
            ch.db,
            ch.now,
            [requester],
            f"Unblock request {rid} received: {request.site}",
            f"We have your request to unblock {request.site}.\n\n{facts}\n\n"
            f"An IT technician will review it, then the DSL. You will get an e-mail when it is decided.\n"
            f"Follow it here: {_link(store, rid)}",
        )
        mail.enqueue(
            ch.db,
            ch.now,
            _others(store, Permission.REVIEW_TECHNICAL, requester),
            f"Unblock request {rid} needs IT review: {request.site}",
            f"{requester.display_name} asks for {request.site} to be unblocked.\n\n{facts}\n\n"
            f"Please review the technical side: {_link(store, rid)}",
        )
    return request


def _others(store: Store, permission: Permission, *exclude: User | None) -> list[User]:
    skip = {u.id for u in exclude if u is not None}
    return [u for u in accounts.with_permission(store, permission) if u.id not in skip]


def _subject(r: Request) -> str:
    return f"unblock request {r.id}: {r.site} for {', '.join(r.groups)}"


def _facts(r: Request, zone: Any) -> str:
    return (
        f"Site: {r.site}\nGroups: {', '.join(r.groups)}\nUntil: {r.until_label} "
        f"(blocked again from {local(r.expires, zone)})\nReason: {r.reason}"
    )


def _pending(store: Store, request_id: int) -> Request:
    row = store.db.execute("SELECT * FROM unblock_requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise NotFound(f"no unblock request {request_id}")
    return _from_row(store, row)


def decide(store: Store, actor: User, request_id: int, approve: bool, note: object, now: datetime) -> Request:
    """IT's review (while waiting for IT) or the DSL's decision (while waiting for the DSL). A refusal
    needs its reason; the DSL may also refuse before IT has reviewed."""
    text = fields.text(
        note,
        "Reason for refusing" if not approve else "Note",
        REASON_LIMIT,
        required=not approve,
        multiline=True,
    )
    with audit.change(store, actor.username, text or _APPROVED_WITHOUT_NOTE, now) as ch:
        r = _pending(store, request_id)
        if r.status not in WAITING:
            raise InputError(f"Request {r.id} has already been decided ({r.state(now)[1].lower()}).")
        if r.requester.id == actor.id:
            raise NotAllowed("You cannot approve or refuse your own request: another member of staff must.")
        it_side = r.status == WAITING_IT and actor.can(Permission.REVIEW_TECHNICAL)
        dsl_side = actor.can(Permission.APPROVE_SAFEGUARDING) and (r.status == WAITING_DSL or not approve)
        if not (it_side or dsl_side):
            step = "IT review" if r.status == WAITING_IT else "DSL approval"
            raise NotAllowed(f"Request {r.id} is waiting for {step}, which your account cannot give.")
        if dsl_side and r.it_by is not None and r.it_by.id == actor.id:
            raise NotAllowed("The DSL approval must come from a different person from the IT review.")
        if not approve:
            ch.db.execute(
                "UPDATE unblock_requests SET status = ?, refused_by = ?, refused_at = ?, refused_reason = ?"
                " WHERE id = ?",
                (REFUSED, actor.id, iso(now), text, r.id),
            )
            done = _pending(store, r.id)
            ch.log("unblock.refuse", _subject(done), r.to_dict(now), done.to_dict(now))
            _notify_refused(store, ch, done, actor)
            return done
        if it_side:
            ch.db.execute(
                "UPDATE unblock_requests SET status = ?, it_by = ?, it_at = ?, it_note = ? WHERE id = ?",
                (WAITING_DSL, actor.id, iso(now), text or None, r.id),
            )
            done = _pending(store, r.id)
            ch.log("unblock.review", _subject(done), r.to_dict(now), done.to_dict(now))
            _notify_reviewed(store, ch, done)
            return done
        added = [
            rules.add(
                ch,
                rules.Rule(
                    group=g,
                    action="allow",
                    kind="name",
                    target=r.site,
                    reason=f"unblock request {r.id}: {r.reason}",
                    author=actor.username,
                    created=now,
                    expires=r.expires,
                    source=f"unblock request {r.id}",
                ),
            )
            for g in r.groups
        ]
        ch.db.execute(
            "UPDATE unblock_requests SET status = ?, dsl_by = ?, dsl_at = ?, dsl_note = ?, rule_ids = ?"
            " WHERE id = ?",
            (APPROVED, actor.id, iso(now), text or None, json.dumps([a.id for a in added]), r.id),
        )
        done = _pending(store, r.id)
        ch.log("unblock.approve", _subject(done), r.to_dict(now), done.to_dict(now))
    return put_in_force(store, done, actor, now)


def put_in_force(store: Store, r: Request, actor: User, now: datetime) -> Request:
    """Applies an approved request's allow rules to the live policy. If that fails, the request stays
    approved with the error shown, and this can be tried again; the rules are also in the next apply."""
    if r.status != APPROVED or r.generation is not None:
        raise InputError(f"Request {r.id} is not waiting to be put in force.")
    try:
        added = [rules.get(store, i) for i in r.rule_ids]
        gen = upkeep.add_rules(store, added, actor.username, f"unblock request {r.id} approved", now)
        if gen is None:
            raise InputError(policy_ops.NO_POLICY)
    except (PolicyError, InputError, OSError) as e:
        store.db.execute("UPDATE unblock_requests SET apply_error = ? WHERE id = ?", (str(e), r.id))
        return _pending(store, r.id)
    with audit.change(store, actor.username, f"unblock request {r.id} in force", now) as ch:
        ch.db.execute(
            "UPDATE unblock_requests SET generation = ?, apply_error = NULL WHERE id = ?", (gen.id, r.id)
        )
        done = _pending(store, r.id)
        _notify_approved(store, ch, done)
    return done


def withdraw(store: Store, actor: User, request_id: int, now: datetime) -> Request:
    with audit.change(store, actor.username, "withdrawn by the requester", now) as ch:
        r = _pending(store, request_id)
        if r.requester.id != actor.id:
            raise NotAllowed("Only the person who asked can withdraw a request.")
        if r.status not in WAITING:
            raise InputError(f"Request {r.id} has already been decided.")
        ch.db.execute("UPDATE unblock_requests SET status = ? WHERE id = ?", (WITHDRAWN, r.id))
        done = _pending(store, r.id)
        ch.log("unblock.withdraw", _subject(done), r.to_dict(now), done.to_dict(now))
    return done


def _notify_reviewed(store: Store, ch: Change, r: Request) -> None:
    facts = _facts(r, store.zone())
    assert r.it_by is not None
    note = f"\nIT's note: {r.it_note}" if r.it_note else ""
    mail.enqueue(
        ch.db,
        ch.now,
        _others(store, Permission.APPROVE_SAFEGUARDING, r.requester, r.it_by),
        f"Unblock request {r.id} needs DSL approval: {r.site}",
        f"{r.it_by.display_name} (IT) has reviewed {r.requester.display_name}'s request.{note}\n\n{facts}\n\n"
        f"Please decide on the safeguarding side: {_link(store, r.id)}",
    )
    mail.enqueue(
        ch.db,
        ch.now,
        [r.requester],
        f"Unblock request {r.id}: IT has reviewed it",
        f"IT has reviewed your request to unblock {r.site}. It now waits for the DSL.\n{_link(store, r.id)}",
    )


def _notify_refused(store: Store, ch: Change, r: Request, by: User) -> None:
    mail.enqueue(
        ch.db,
        ch.now,
        [r.requester],
        f"Unblock request {r.id} refused: {r.site}",
        f"Your request to unblock {r.site} was refused by {by.display_name}.\n\n"
        f"Reason: {r.refused_reason}\n\n{_link(store, r.id)}",
    )
    if r.it_by is not None and r.it_by.id != by.id:
        mail.enqueue(
            ch.db,
            ch.now,
            [r.it_by],
            f"Unblock request {r.id} refused by the DSL: {r.site}",
            f"The request you reviewed was refused by {by.display_name}.\n\nReason: {r.refused_reason}\n\n"
            f"{_link(store, r.id)}",
        )


def _notify_approved(store: Store, ch: Change, r: Request) -> None:
    zone = store.zone()
    mail.enqueue(
        ch.db,
        ch.now,
        [r.requester],
        f"Unblock request {r.id} approved: {r.site}",
        f"{r.site} is now allowed for {', '.join(r.groups)}. It is blocked again from "
        f"{local(r.expires, zone)}.\n\n{_link(store, r.id)}",
    )
    mail.enqueue(
        ch.db,
        ch.now,
        [u for u in (r.it_by,) if u is not None],
        f"Unblock request {r.id} approved by the DSL: {r.site}",
        f"The request you reviewed is approved and in force; it ends {local(r.expires, zone)}.\n\n"
        f"{_link(store, r.id)}",
    )
