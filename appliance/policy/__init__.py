"""The filtering policy: groups and categories, the trust and school layers, schedules, compiling
into fast-path tables, applying atomically, and explaining verdicts. See docs/policy.md."""
