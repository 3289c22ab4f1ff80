"""Termly filtering compliance tests: probes from inside each group's VLAN, through the real path,
judged against the policy and the standards, kept as immutable reports hashed into the audit trail.
docs/compliance.md describes it."""
