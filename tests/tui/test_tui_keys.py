"""One source for what each desk key does: the desk's bindings. The footer shows their
short description, the help screen their tooltip for the keys as mapped in settings
``[keys]``, and the key tables of README.md and docs/desk.md must say the same."""

from __future__ import annotations

import re

import pytest
from textual.widgets._footer import FooterKey

from engine.core import settings
from tests.conftest import ROOT
from tests.support.scripted_desk import scripted_desk, wait_for
from tui.screens.desk import DeskScreen, binding_names, desk_bindings, key_table
from tui.screens.dialogs import HelpScreen

HEADER = "| key | setting `[keys]` | what it does |"


def doc_key_rows(path: str, section: str) -> list[tuple[str, str, str]]:
    """The rows of the key table under ``section`` in ``path``: (key, setting, what it does),
    code spans removed from the description (the help screen shows plain text)."""
    text = (ROOT / path).read_text(encoding="utf-8")
    start = text.index(f"\n{section}\n")
    end = text.find("\n## ", start + 1)
    lines = text[start:end if end > 0 else None].splitlines()
    at = lines.index(HEADER)
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        key, setting, what = (c.strip() for c in line.strip("|").split("|"))
        if setting == "—":
            continue  # not a [keys] key: the app's ctrl+c / ctrl+q, Textual's tab
        rows.append((key, setting, what.replace("`", "")))
    return rows


@pytest.mark.parametrize(("path", "section"), [("README.md", "## The desk"), ("docs/desk.md", "## Keys")])
def test_doc_key_tables_say_what_the_bindings_say(path, section):
    expected = key_table()
    table = "\n".join(f"| {k} | {s} | {d} |" for k, s, d in expected)
    assert doc_key_rows(path, section) == expected, (
        f"{path} ({section}) no longer matches the desk's bindings (tui/screens/desk.py); "
        f"its rows should read (add code spans around setting names as you like):\n{table}")


def test_every_key_has_a_setting_a_label_and_help():
    names = binding_names()
    assert len(names) == len(set(names))
    assert set(names) == set(settings.defaults()["keys"]), "a binding per setting in [keys], and no other"
    for b in desk_bindings():
        assert b.description, b.id
        assert b.tooltip and b.tooltip != b.description, f"{b.id}: the help text is the tooltip"


def test_default_keys_are_the_settings_defaults():
    defaults = settings.defaults()["keys"]
    for b in desk_bindings():
        assert b.id is not None
        assert b.key == defaults[b.id.removeprefix("desk.")], b.id


def shown_keys(desk: DeskScreen) -> dict[str, str]:
    return {k.action: k.key_display for k in desk.query(FooterKey)}


async def test_help_screen_and_footer_show_the_keys_as_remapped(tmp_path):
    app, _, _ = scripted_desk(tmp_path, 'keys.buy="n"', 'keys.help="f1"', 'keys.toggle_cnn="f5,ctrl+b"')
    by_id = {b.id: b for b in desk_bindings()}
    async with app.run_test(size=(160, 48)) as pilot:
        desk = app.desk
        await wait_for(pilot, lambda: "order('BUY')" in shown_keys(desk), "the footer")
        assert shown_keys(desk)["order('BUY')"] == "n"
        await pilot.press("question_mark")  # no longer the help key
        assert isinstance(app.screen, DeskScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        rows = dict(app.screen.rows)
        assert rows["n"] == by_id["desk.buy"].tooltip
        assert rows["f1"] == by_id["desk.help"].tooltip
        assert rows["f5 ^b"] == by_id["desk.toggle_cnn"].tooltip, "both keys of a binding, as the footer writes them"
        assert "b" not in rows and "?" not in rows
        # In the order of the bindings, without the keys that do not apply now (a live
        # desk that reaches the exchange: no pause, no sample replay).
        names = [n for n in binding_names() if n not in ("pause", "sample_replay")]
        assert [text for _, text in app.screen.rows] == [by_id[f"desk.{n}"].tooltip for n in names]
        await pilot.press("escape")
        assert isinstance(app.screen, DeskScreen)


def test_key_table_shows_keys_as_the_footer_does():
    rows = {setting: key for key, setting, _ in key_table()}
    assert rows["`size_up`"] == "`+`"
    assert rows["`help`"] == "`?`"
    assert rows["`pause`"] == "`space`"
    assert all(re.fullmatch(r"`[^`]+`( `[^`]+`)*", key) for key in rows.values())


async def test_dialogs_bring_their_own_styles(tmp_path):
    """The dialogs' styles live beside them (tui/screens/dialogs.tcss, each dialog's
    CSS_PATH), not in the desk's stylesheet."""
    from tui.screens.dialogs import ConfirmQuit

    assert "#help-box" not in (ROOT / "tui" / "desk.tcss").read_text(encoding="utf-8")
    app, _, _ = scripted_desk(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        box = app.screen.query_one("#help-box")
        assert box.styles.border_top[0] == "thick"
        assert box.outer_size.width == 96
        await pilot.press("escape")
        app.push_screen(ConfirmQuit("a position is open"))
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuit) and bool(app.screen.query("#confirm-box")),
                       "the quit question")
        await pilot.pause()
        box = app.screen.query_one("#confirm-box")
        assert box.outer_size.width == 64
        assert box.styles.border_top[0] == "thick"


def test_every_stylesheet_is_package_data():
    """pyproject's package-data ships every .tcss file of tui/ (an installed desk without
    its dialogs' styles would still run, unstyled)."""
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["tui"]
    shipped = {p for g in globs for p in (ROOT / "tui").glob(g)}
    assert set((ROOT / "tui").rglob("*.tcss")) == shipped
