"""Errors a person can act on. Their messages are shown as they are, so they are written for the
teacher or technician reading them; anything else is a fault and is logged, not shown."""

from __future__ import annotations

from appliance.policy.model import PolicyError


class InputError(ValueError):
    """Something in what was entered is wrong or missing; the message says what and how to fix it."""


class NotAllowed(Exception):
    """The account may not take this step (a rule of the workflow, e.g. approving one's own request)."""


class NotFound(Exception):
    """No such thing (or none this account may see)."""


class Tampered(Exception):
    """A kept record no longer matches its hash or the audit trail, so it is not shown as it is."""


# What a view turns into a message beside the form instead of an error page.
USER_ERRORS = (InputError, PolicyError)
