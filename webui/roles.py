"""Who may do what. Every view declares the permission it needs (webui.security.requires) and the
server checks it on every request; what a page hides is only a convenience."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    TEACHER = "teacher"
    IT = "it"
    DSL = "dsl"
    ADMIN = "admin"

    @property
    def title(self) -> str:
        return ROLE_TITLES[self]


ROLE_TITLES = {
    Role.TEACHER: "Teacher or staff",
    Role.IT: "IT technician",
    Role.DSL: "DSL or deputy DSL",
    Role.ADMIN: "Trust administrator",
}


class Permission(enum.StrEnum):
    SIGNED_IN = "signed in"  # any account: own requests, own password and tokens
    REQUEST_UNBLOCK = "request unblocks"
    VIEW_REQUESTS = "see everyone's unblock requests"
    REVIEW_TECHNICAL = "review unblock requests (technical side)"
    APPROVE_SAFEGUARDING = "approve unblock requests (safeguarding side)"
    VIEW_ALERTS = "see and acknowledge safeguarding alerts"
    VIEW_REPORTS = "see the dashboard and search the logs"
    VIEW_POLICY = "see the filtering policy and the change log"
    VIEW_COMPLIANCE = "see compliance reports and record what was done about their findings"
    EDIT_POLICY = "change the filtering policy"
    MANAGE_ACCOUNTS = "manage accounts"
    MANAGE_SETTINGS = "change the appliance's settings"


_EVERYONE = {Permission.SIGNED_IN, Permission.REQUEST_UNBLOCK}
_STAFF = _EVERYONE | {Permission.VIEW_REQUESTS, Permission.VIEW_REPORTS, Permission.VIEW_POLICY}

# Safeguarding alerts are the DSL's alone; the technical review is IT's (the trust's administrator
# is IT too); the safeguarding approval is the DSL's alone. Compliance reports are for IT, who acts on
# their findings, and the DSL, who receives them.
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.TEACHER: frozenset(_EVERYONE),
    Role.IT: frozenset(
        _STAFF | {Permission.REVIEW_TECHNICAL, Permission.EDIT_POLICY, Permission.VIEW_COMPLIANCE}
    ),
    Role.DSL: frozenset(
        _STAFF | {Permission.APPROVE_SAFEGUARDING, Permission.VIEW_ALERTS, Permission.VIEW_COMPLIANCE}
    ),
    Role.ADMIN: frozenset(
        _STAFF
        | {
            Permission.REVIEW_TECHNICAL,
            Permission.EDIT_POLICY,
            Permission.VIEW_COMPLIANCE,
            Permission.MANAGE_ACCOUNTS,
            Permission.MANAGE_SETTINGS,
        }
    ),
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]
