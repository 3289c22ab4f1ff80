"""Shared pytest fixtures. A module overrides one by defining its own of the same name, which may
take the shared one as an argument to build on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import labs
import pytest
from flask import Flask
from playwright.sync_api import Browser, sync_playwright
from test_webui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Mailbox,
    build_state,
    copy_state,
    make_app,
    smtp_server,
    use_smtp,
)

from appliance import audit
from appliance.lab.topology import Lab
from appliance.lists import catalogue, importer
from appliance.store import Store

LISTS = Path(__file__).parent / "data" / "lists"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store with the test IWF list and UT1's gambling category imported (no policy yet)."""
    with Store(tmp_path / "state") as s:
        with audit.change(s, "it", "setup") as ch:
            catalogue.add(ch, "iwf", "iwf", None, str(LISTS / "iwf.txt"), None)
            catalogue.add(ch, "gambling", "ut1", "gambling", str(LISTS / "ut1" / "gambling"), None)
        for name in ("iwf", "gambling"):
            importer.update(s, name, "it", "setup")
        yield s


# The web UI's tests: one state directory built per module (slow: real lists and a policy apply),
# copied afresh for each test.


@pytest.fixture(scope="module")
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_state(tmp_path_factory.mktemp(request.module.__name__))


@pytest.fixture
def state(template: Path, tmp_path: Path) -> Path:
    return copy_state(template, tmp_path)


@pytest.fixture
def app(state: Path) -> Flask:
    return make_app(state)


@pytest.fixture
def mailbox(state: Path) -> Iterator[Mailbox]:
    """A real SMTP server on loopback that the appliance's mail settings point at."""
    with smtp_server() as (box, port):
        with Store(state) as store:
            use_smtp(store, port)
        yield box


# The lab (docs/lab.md): one per module, named from the module's LAB_PREFIX, so that modules never touch
# each other's labs or yours.


@pytest.fixture(scope="module")
def appliance_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The lab running the appliance with its sample policy, for the whole module (LAB_PREFIX and this
    process's id name it); `lab down` at the end must leave nothing behind (labs.appliance_lab)."""
    with labs.appliance_lab(f"{request.module.LAB_PREFIX}{os.getpid() % 100000}") as lab:
        yield lab


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Namespace tests need root: run as a normal user they fail with this plain reason, never skip.
    if item.get_closest_marker("netns") and os.geteuid() != 0:
        pytest.fail("this test builds network namespaces: run the suite as root (bash scripts/test.sh)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium under Playwright (never a downloaded browser)."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
