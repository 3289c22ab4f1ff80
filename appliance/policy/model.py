"""The vocabulary of a filtering policy: groups, categories, actions and the layers that decide."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Seed-school groups, most restricted first. The appliance config maps VLANs and subnets to them.
GROUPS = ("students", "staff", "exams", "specialist", "guests")
ALL_GROUPS = "*"


class PolicyError(ValueError):
    """Bad policy input, or a change that the layering does not permit (with the reason)."""


@dataclass(frozen=True)
class Category:
    name: str
    title: str
    description: str
    padlocked: bool = False  # always blocked for every group; nobody can change that


# UK Safer Internet Centre "appropriate filtering" categories, then the operational ones schools use.
CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category(
            "iwf",
            "Child sexual abuse content (IWF)",
            "Pages on the Internet Watch Foundation's URL list.",
            padlocked=True,
        ),
        Category(
            "ctiru",
            "Unlawful terrorist content (CTIRU)",
            "Content on the police-assessed Counter Terrorism Internet Referral Unit list.",
            padlocked=True,
        ),
        Category(
            "discrimination",
            "Discrimination and hate",
            "Promotes unjust or prejudicial treatment of people on the grounds of protected "
            "characteristics, or hate speech.",
        ),
        Category(
            "drugs",
            "Drugs and substance abuse",
            "Displays or promotes the illegal use of drugs or substances.",
        ),
        Category(
            "extremism", "Extremism", "Promotes terrorism and terrorist ideologies, violence or intolerance."
        ),
        Category("gambling", "Gambling", "Enables gambling."),
        Category(
            "malware_hacking",
            "Malware and hacking",
            "Promotes the compromise of systems, including filter bypass: proxies, VPNs and anonymisers.",
        ),
        Category("pornography", "Pornography", "Displays sexual acts or explicit images."),
        Category(
            "piracy", "Piracy and copyright theft", "Includes illegal provision of copyrighted material."
        ),
        Category(
            "self_harm",
            "Self harm",
            "Promotes or displays deliberate self harm, including suicide and eating disorders.",
        ),
        Category("violence", "Violence", "Promotes the use of physical force intended to hurt or kill."),
        Category(
            "misinformation",
            "Mis- and disinformation",
            "Promotes or spreads false or misleading information.",
        ),
        Category("social_media", "Social media", "Social networks and messaging."),
        Category("games", "Games", "Online games and gaming platforms."),
        Category("streaming", "Streaming", "Video and audio streaming."),
        Category(
            "doh_dot",
            "DNS over HTTPS and TLS endpoints",
            "Encrypted DNS resolvers that would bypass the school's filtering.",
        ),
        Category("ads_trackers", "Adverts and trackers", "Advertising and tracking services."),
    )
}
PADLOCKED_CATEGORIES = tuple(c.name for c in CATEGORIES.values() if c.padlocked)


class Action(enum.StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class Layer(enum.IntEnum):
    """The order in which a policy decides; the first layer that has an answer wins."""

    PADLOCKED = 1  # the IWF and CTIRU lists
    TRUST_LOCKED = 2  # the trust's locked categories and entries
    SCHOOL = 3  # the school's allow and deny rules
    TRUST_DEFAULT = 4  # the trust's default categories per group, and the group's default action


def check_group(group: str, allow_all: bool = False) -> str:
    if group in GROUPS or (allow_all and group == ALL_GROUPS):
        return group
    choices = ", ".join(GROUPS) + (f", or {ALL_GROUPS} for all groups" if allow_all else "")
    raise PolicyError(f"unknown group {group!r} (one of {choices})")


def check_category(name: str) -> Category:
    try:
        return CATEGORIES[name]
    except KeyError:
        raise PolicyError(f"unknown category {name!r} (one of {', '.join(CATEGORIES)})") from None


def group_label(group: str) -> str:
    return "all groups" if group == ALL_GROUPS else group
