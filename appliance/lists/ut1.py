"""UT1 (Université Toulouse Capitole) blacklist categories, and which of ours each feeds.

A UT1 or squidGuard set is a folder of category folders, each with `domains` and `urls` files. A
category not mapped here (e.g. sexual_education, which must not be blocked by default) is left out
unless mapped explicitly."""

from __future__ import annotations

from pathlib import Path

from appliance.lists.sources import FOLDER_FILES

UT1_CATEGORIES: dict[str, str] = {
    "adult": "pornography",
    "agressif": "discrimination",
    "arjel": "gambling",
    "audio-video": "streaming",
    "cryptojacking": "malware_hacking",
    "dangerous_material": "violence",
    "ddos": "malware_hacking",
    "doh": "doh_dot",
    "drogue": "drugs",
    "fakenews": "misinformation",
    "gambling": "gambling",
    "games": "games",
    "hacking": "malware_hacking",
    "malware": "malware_hacking",
    "phishing": "malware_hacking",
    "publicite": "ads_trackers",
    "redirector": "malware_hacking",
    "social_networks": "social_media",
    "stalkerware": "malware_hacking",
    "strict_redirector": "malware_hacking",
    "violence": "violence",
    "vpn": "malware_hacking",
    "warez": "piracy",
}


def category_folders(root: Path) -> list[Path]:
    """The category folders in a set: sub-folders holding a domains or urls file."""
    return sorted(p for p in root.iterdir() if p.is_dir() and any((p / f).is_file() for f in FOLDER_FILES))
