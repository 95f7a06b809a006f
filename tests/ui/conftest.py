"""One server and one browser per test module (tests/ui), as the suite's time budget asks."""

from __future__ import annotations

import pytest

from ui import ui_kit


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    home, args = ui_kit.make_world(root)
    with ui_kit.server_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        yield ui_kit.UiWorld(home=home, server=server, root=root)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = ui_kit.launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, world):
    context = browser.new_context()
    pg = context.new_page()
    pg.watch = ui_kit.OriginWatch(pg, world.url)
    try:
        yield pg
    finally:
        context.close()
