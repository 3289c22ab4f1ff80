"""Block lists: formats, imports into keyed-hash entry files, sources and updates. See docs/policy.md."""
