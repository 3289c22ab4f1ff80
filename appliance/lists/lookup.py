"""Which lists hold a name: for `policy explain` (which list blocked it) and for refusing school
rules that try to open a padlocked entry. Works on the hashed entry files, so it never needs, or
shows, a confidential entry in clear: it hashes the name being asked about and its parents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.lists.entries import EntrySet
from fastpath.siphash import keyed_hash


@dataclass(frozen=True)
class ListMatch:
    list: str
    category: str
    suffix: str  # the part of the name the entry is for
    kind: str  # "subtree" (the domain and its subdomains), "exact" or "page_hosts" (pages on that host)


def suffixes(name: str) -> list[str]:
    """name and each parent domain, most specific first."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


class ListLookup:
    """Membership tests against several lists' entry files (mapped, so large lists cost little)."""

    def __init__(self, key: bytes, lists: list[tuple[str, str, Path]]) -> None:
        self.key = key
        self.lists = [(name, category, EntrySet.read(path, key, mmap=True)) for name, category, path in lists]

    def matches(self, name: str) -> list[ListMatch]:
        """Every list entry that applies to the normalised name, most specific first."""
        out = []
        for i, suffix in enumerate(suffixes(name)):
            h = keyed_hash(self.key, suffix)
            kinds = ("subtree", "exact", "page_hosts") if i == 0 else ("subtree",)
            for list_name, category, entries in self.lists:
                out.extend(ListMatch(list_name, category, suffix, k) for k in kinds if entries.has(k, h))
        return out
