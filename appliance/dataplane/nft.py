"""Talking to nftables through libnftables' JSON API (python3-nftables)."""

from __future__ import annotations

from typing import Any

import nftables


class NftError(RuntimeError):
    pass


class Nft:
    def __init__(self) -> None:
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)

    def run(self, commands: list[dict[str, Any]]) -> dict[str, Any]:
        """Runs the commands as one transaction: all of them apply, or none and NftError says why."""
        rc, output, error = self._nft.json_cmd({"nftables": commands})
        if rc != 0:
            raise NftError(error.strip() or f"libnftables returned {rc}")
        return output if isinstance(output, dict) else {}

    def tables(self) -> list[tuple[str, str]]:
        listing = self.run([{"list": {"tables": {}}}])
        tables = [o["table"] for o in listing.get("nftables", []) if "table" in o]
        return [(t["family"], t["name"]) for t in tables]

    def delete_table(self, family: str, name: str) -> None:
        if (family, name) in self.tables():
            self.run([{"delete": {"table": {"family": family, "name": name}}}])
