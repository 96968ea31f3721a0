"""tollgate_core.plugins: discovery through entry points, and plugins that misbehave."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
from tollgate_core import Provider, build_plugin_manager, hookimpl, load_providers
from tollgate_core.hookspecs import RegisterProvider
from tollgate_core.plugins import ENTRY_POINT_GROUP, collect_providers, load_entrypoint_plugins
from tollgate_core.testing import FakeProvider


class OtherFake(FakeProvider):
    """A different class claiming the same kind as FakeProvider."""


class Registers:
    """A plugin object that registers the given classes."""

    def __init__(self, *classes: Any) -> None:
        self.classes = classes

    @hookimpl
    def register_providers(self, register: RegisterProvider) -> None:
        for cls in self.classes:
            register(cls)


class Broken:
    @hookimpl
    def register_providers(self, register: RegisterProvider) -> None:
        raise RuntimeError("the plugin is broken")


def test_installed_providers_load_through_their_entry_points() -> None:
    report = load_providers()
    assert {"openai", "gemini", "anthropic"} <= set(report.providers)
    assert report.origins["openai"] == "openai"
    assert all(issubclass(cls, Provider) for cls in report.providers.values())
    assert report.problems == {}


def test_explicit_plugins_skip_entry_points() -> None:
    report = load_providers(plugins=[Registers(FakeProvider)])
    assert report.providers == {"fake": FakeProvider}


def test_a_duplicate_kind_is_refused_and_reported_by_plugin_name() -> None:
    pm = build_plugin_manager()
    pm.register(Registers(FakeProvider), name="first")
    pm.register(Registers(OtherFake), name="second")
    report = collect_providers(pm)
    assert report.providers == {"fake": FakeProvider}
    assert report.origins == {"fake": "first"}
    assert set(report.problems) == {"second"}
    assert "already registered by first" in report.problems["second"]


def test_the_same_class_twice_is_not_a_conflict() -> None:
    pm = build_plugin_manager()
    pm.register(Registers(FakeProvider, FakeProvider), name="twice")
    report = collect_providers(pm)
    assert report.providers == {"fake": FakeProvider} and report.problems == {}


def test_a_broken_plugin_is_reported_without_raising() -> None:
    pm = build_plugin_manager()
    pm.register(Broken(), name="broken")
    pm.register(Registers(FakeProvider), name="fine")
    report = collect_providers(pm)
    assert report.problems == {"broken": "RuntimeError: the plugin is broken"}
    assert report.providers == {"fake": FakeProvider}


def test_registering_something_that_is_not_a_provider_is_reported() -> None:
    pm = build_plugin_manager()
    pm.register(Registers(object), name="odd")
    report = collect_providers(pm)
    assert report.problems["odd"].startswith("TypeError")
    assert report.providers == {}


def test_entry_points_that_fail_to_load_are_reported_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "tollgate_unknown_hook.py").write_text(
        "from tollgate_core import hookimpl\n\n@hookimpl\ndef no_such_hook():\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points
    extra = [
        importlib.metadata.EntryPoint("missing", "tollgate_no_such_module", ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("unknown-hook", "tollgate_unknown_hook", ENTRY_POINT_GROUP),
    ]

    def entry_points(**kwargs: Any) -> Any:
        found = real(**kwargs)
        return [*found, *extra] if kwargs.get("group") == ENTRY_POINT_GROUP else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    report = load_providers()
    assert report.problems["missing"].startswith("ModuleNotFoundError")
    assert "no_such_hook" in report.problems["unknown-hook"]
    assert {"openai", "gemini", "anthropic"} <= set(report.providers)


def test_load_problems_are_returned_not_attached_to_the_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.metadata.entry_points
    missing = importlib.metadata.EntryPoint("missing", "tollgate_no_such_module", ENTRY_POINT_GROUP)

    def entry_points(**kwargs: Any) -> Any:
        found = real(**kwargs)
        return [*found, missing] if kwargs.get("group") == ENTRY_POINT_GROUP else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    pm = build_plugin_manager()
    problems = load_entrypoint_plugins(pm)
    assert set(problems) == {"missing"}
    assert not hasattr(pm, "tollgate_problems")
    assert collect_providers(pm, problems=problems).problems == problems


class DeclaresNoArguments:
    """A plugin written against a hook that has since gained arguments it does not take."""

    called = False

    @hookimpl
    def register_providers(self) -> None:
        DeclaresNoArguments.called = True


def test_an_implementation_gets_only_the_arguments_it_declares() -> None:
    pm = build_plugin_manager()
    pm.register(DeclaresNoArguments(), name="bare")
    pm.register(Registers(FakeProvider), name="fine")
    report = collect_providers(pm)
    assert DeclaresNoArguments.called
    assert report.problems == {}
    assert report.providers == {"fake": FakeProvider}
