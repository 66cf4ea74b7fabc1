"""The plugin machinery in-process: discovery, isolation of broken plugins, clashes, control.

Plugins here are real installed distributions as importlib.metadata sees them: a module and
a `*.dist-info` folder with `entry_points.txt`, written to a temporary directory put on
sys.path. (tests/plugins/test_plugins_installed.py installs real packages with pip, in new processes.)
"""

from __future__ import annotations

import re
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pluggy
import pytest
import torch
from torch import nn

import zoo
from zoo import cli
from zoo._build import builder
from zoo._errors import AmbiguousNameError, DuplicateNameError, PluginError, UnknownNameError
from zoo._language.registry import Origin
from zoo._plugins import discovery, hookspecs

# --- a fake site-packages ---------------------------------------------------------------------

BLOCK_PLUGIN = '''
from torch import nn
import zoo

class {block}(nn.Module):
    """A Linear that remembers which plugin made it."""

    def __init__(self, features: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)
        self.made_by = "{dist}"

    def forward(self, X):
        return self.linear(X)

@zoo.hookimpl
def zoo_blocks(register):
    register("{block}", {block})

@zoo.hookimpl
def zoo_registries(register):
    register("registry.toml")
'''


class Site:
    """A directory on sys.path holding installed distributions, written by `add`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def add(
        self,
        dist: str,
        source: str,
        version: str = "1.0",
        entry_point: str | None = None,
        files: dict[str, str] | None = None,
    ) -> str:
        """Install distribution `dist` whose plugin module has `source`; returns the module name."""
        module = dist.replace("-", "_")
        package = self.root / module
        package.mkdir()
        (package / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
        for name, text in (files or {}).items():
            (package / name).write_text(textwrap.dedent(text), encoding="utf-8")
        info = self.root / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
        (info / "entry_points.txt").write_text(f"[zoo]\n{entry_point or module} = {module}\n", encoding="utf-8")
        (info / "top_level.txt").write_text(f"{module}\n", encoding="utf-8")
        self.modules.append(module)
        return module

    def add_block_plugin(self, dist: str, block: str, version: str = "1.0", toml: str = "", **kwargs: str) -> str:
        """A plugin registering one block class `block` and declarations `toml`."""
        source = BLOCK_PLUGIN.format(block=block, dist=dist)
        return self.add(dist, source, version, files={"registry.toml": toml}, **kwargs)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """A fresh fake site-packages on sys.path, and a fresh process registry; both undone afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(discovery, "_state", {"registry": None, "reports": [], "local": []})
    monkeypatch.delenv(discovery.DISABLE_ENV, raising=False)
    monkeypatch.delenv(discovery.REGISTRY_ENV, raising=False)
    fake = Site(root)
    yield fake
    for module in fake.modules:
        for loaded in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
            sys.modules.pop(loaded)


def report_of(dist: str) -> discovery.PluginReport:
    return next(r for r in discovery.reports() if r.dist == dist)


def quietly(fn: Callable[[], object]) -> object:
    """Run `fn` with zoo's plugin warnings recorded and dropped (the test checks them otherwise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zoo.ZooPluginWarning)
        return fn()


# --- the contract -------------------------------------------------------------------------------


def test_the_contract_is_pluggy_project_zoo_with_four_hooks() -> None:
    assert hookspecs.PROJECT == "zoo" and hookspecs.ENTRY_POINT_GROUP == "zoo"
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    assert {name for name in dir(manager.hook) if name.startswith("zoo_")} == {
        "zoo_blocks",
        "zoo_registries",
        "zoo_initializers",
        "zoo_ops",
    }
    assert zoo.hookimpl is hookspecs.hookimpl and zoo.hookimpl.project_name == "zoo"


def test_builtins_arrive_as_the_default_plugin_through_the_same_hooks() -> None:
    registry, found = discovery.discover([])
    assert [(r.name, r.dist, r.module, r.status) for r in found] == [("zoo", "zoo", "zoo._plugins.builtin", "ok")]
    assert found[0].version == zoo.__version__
    assert "chimera" in found[0].entries and "Linear" in found[0].blocks and "normal" in found[0].inits
    linear = registry.resolve("Linear")
    assert linear.factory is nn.Linear and linear.origin == Origin("zoo", zoo.__version__)
    assert registry.resolve("zoo:chimera").entry is not None


# --- discovery on first use ----------------------------------------------------------------------


def test_an_installed_plugin_is_found_with_no_import_and_no_configuration(site: Site) -> None:
    module = site.add_block_plugin(
        "zoo-good", "GoodBlock", version="1.2.3", toml='[good_net]\nlayers = ["GoodBlock", "ReLU"]\n'
    )
    assert module not in sys.modules
    model = zoo.build("good_net")
    assert module in sys.modules  # imported by discovery, on first use
    assert type(model[0]).__name__ == "GoodBlock" and model(torch.ones(3, 2)).shape == (3, 2)
    # provenance: which distribution and version provides every name
    registry = discovery.current()
    assert [p.origin for p in registry.providers("good_net")] == [Origin("zoo-good", "1.2.3")]
    assert zoo.spec("GoodBlock").origin == "zoo-good 1.2.3"
    info = builder.build_info(model)
    assert info is not None and info.provenance["GoodBlock"] == "zoo-good 1.2.3"
    good = report_of("zoo-good")
    assert (good.name, good.module, good.status, good.blocks, good.entries) == (
        "zoo_good",
        "zoo_good",
        "ok",
        ["GoodBlock"],
        ["good_net"],
    )
    assert good.seconds > 0


def test_discovery_happens_once_until_reset(site: Site) -> None:
    assert zoo.names("late*") == []
    site.add_block_plugin("zoo-late", "LateBlock")
    assert zoo.names("late*") == []  # the registry of this process is already discovered
    discovery.reset()  # e.g. after `pip install` in a running notebook
    assert zoo.names("late*") == ["LateBlock"]


def test_a_plugin_that_fails_to_import_is_reported_once_and_skipped(site: Site) -> None:
    site.add("zoo-broken", "import zoo_missing_dependency\n", version="0.2.0")
    site.add_block_plugin("zoo-good", "GoodBlock")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chimera = zoo.build("chimera")
        zoo.build("GoodBlock")
        zoo.names()
    messages = [str(w.message) for w in caught if w.category is zoo.ZooPluginWarning]
    assert messages == [
        "zoo: plugin 'zoo_broken' from zoo-broken 0.2.0 failed and was skipped: "
        "ModuleNotFoundError: No module named 'zoo_missing_dependency'"
    ]
    assert chimera(torch.ones(2, 20)).shape == ()
    broken = report_of("zoo-broken")
    assert broken.status == "failed" and broken.error == "ModuleNotFoundError: No module named 'zoo_missing_dependency'"


def test_a_plugin_raising_in_a_hook_is_skipped_whole(site: Site) -> None:
    site.add(
        "zoo-half",
        """
        from torch import nn
        import zoo

        @zoo.hookimpl
        def zoo_blocks(register):
            register("HalfRegistered", nn.Identity)

        @zoo.hookimpl
        def zoo_registries(register):
            raise RuntimeError("registry server unreachable")
        """,
        version="0.3.0",
    )
    with pytest.warns(
        zoo.ZooPluginWarning, match=r"'zoo_half' from zoo-half 0\.3\.0 failed .*RuntimeError: registry server"
    ):
        assert "chimera" in zoo.names()
    assert "HalfRegistered" not in discovery.current()  # registered before the failure, dropped with it
    assert report_of("zoo-half").blocks == []


def test_sys_exit_inside_a_plugin_does_not_end_the_program(site: Site) -> None:
    site.add("zoo-exits", "import sys\nsys.exit('this plugin needs CUDA')\n")
    with pytest.warns(zoo.ZooPluginWarning, match="SystemExit: this plugin needs CUDA"):
        zoo.build("mlp")


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("def zoo_blocks(register):\n    pass\n", "zoo_blocks must be marked @zoo.hookimpl"),
        (
            "import zoo\n@zoo.hookimpl\ndef zoo_block(register):\n    pass\n",
            "'zoo_block' is not a zoo hook. Did you mean 'zoo_blocks'?",
        ),
        ("X = 1\n", "the module defines no @zoo.hookimpl function"),
        ("import zoo\n@zoo.hookimpl\ndef zoo_blocks(reg):\n    pass\n", "PluginValidationError"),
        (
            "import zoo\n@zoo.hookimpl\ndef zoo_blocks(register):\n    register('Two', 2)\n",
            "needs a name without ':' and a callable",
        ),
        (
            "import zoo\n@zoo.hookimpl\ndef zoo_blocks(register):\n    register('a:b', len)\n",
            "needs a name without ':'",
        ),
        (
            "import zoo\n@zoo.hookimpl\ndef zoo_initializers(register):\n    register('', len)\n",
            "needs a name and a callable",
        ),
        (
            "import zoo\n@zoo.hookimpl\ndef zoo_ops(register):\n    register('twice', 'zoo_wrong.ops.twice')\n",
            "an import path is 'package.module:attribute', as in an entry point; got 'zoo_wrong.ops.twice'",
        ),
    ],
    ids=[
        "unmarked",
        "misspelt",
        "no-hooks",
        "bad-signature",
        "not-callable",
        "qualified-name",
        "empty-init-name",
        "bad-import-path",
    ],
)
def test_a_plugin_that_implements_the_contract_wrongly_fails_with_the_reason(
    site: Site, source: str, error: str
) -> None:
    site.add("zoo-wrong", source)
    with pytest.warns(zoo.ZooPluginWarning, match="zoo-wrong 1.0 failed"):
        zoo.names()
    wrong = report_of("zoo-wrong")
    assert wrong.status == "failed" and error in (wrong.error or "")


def test_a_bad_plugin_registry_file_names_file_and_line(site: Site) -> None:
    toml = '[ok]\nlayers = ["ReLU"]\n\n[bad]\ninput = "2x20"\nlayers = ["ReLU"]\n'
    site.add_block_plugin("zoo-badtoml", "BadTomlBlock", toml=toml)
    with pytest.warns(zoo.ZooPluginWarning, match="SpecError"):
        assert "ok" not in zoo.names()  # the whole plugin is skipped, its good entry too
    error = report_of("zoo-badtoml").error or ""
    assert f"{site.root / 'zoo_badtoml' / 'registry.toml'}:5" in error and "`input` must be a shape" in error


def test_a_relative_registry_path_is_relative_to_the_plugin_not_the_working_directory(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.add_block_plugin("zoo-rel", "RelBlock", toml='[rel_net]\nlayers = ["RelBlock"]\n')
    (tmp_path / "registry.toml").write_text('[decoy]\nlayers = ["ReLU"]\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert "rel_net" in zoo.names() and "decoy" not in zoo.names()


# --- registration by import path ------------------------------------------------------------------

LAZY_PLUGIN = """
import zoo

@zoo.hookimpl
def zoo_blocks(register):
    register("{block}", "{module}.blocks:{block}")

@zoo.hookimpl
def zoo_ops(register):
    register("{block}_twice", "{module}.blocks:twice")

@zoo.hookimpl
def zoo_registries(register):
    register("registry.toml")
"""

LAZY_BLOCKS = """
from torch import nn

class GoodLazy(nn.Linear):
    def __init__(self, features: int = 2) -> None:
        super().__init__(features, features)

def twice(x):
    return x * 2
"""


def add_lazy_plugin(site: Site, dist: str, block: str, toml: str = "") -> str:
    """A plugin whose __init__ names its block and op by import path; they live in its `blocks` module."""
    module = dist.replace("-", "_")
    source = LAZY_PLUGIN.format(block=block, module=module)
    return site.add(dist, source, files={"blocks.py": LAZY_BLOCKS, "registry.toml": toml})


def test_a_block_registered_by_import_path_is_imported_where_first_used(site: Site) -> None:
    module = add_lazy_plugin(
        site, "zoo-lazy", "GoodLazy", toml='[lazy_net]\nlayers = ["GoodLazy", { op = "GoodLazy_twice" }]\n'
    )
    assert "GoodLazy" in zoo.names() and "lazy_net" in zoo.names()
    assert module in sys.modules and f"{module}.blocks" not in sys.modules  # discovery needed the names only
    assert report_of("zoo-lazy").blocks == ["GoodLazy"] and report_of("zoo-lazy").ops == ["GoodLazy_twice"]
    model = zoo.build("lazy_net")
    assert f"{module}.blocks" in sys.modules
    block = next(model.children())
    assert type(block).__name__ == "GoodLazy" and zoo.spec("GoodLazy").origin == "zoo-lazy 1.0"
    with torch.no_grad():
        assert torch.equal(model(torch.ones(1, 2)), 2 * block(torch.ones(1, 2)))
    assert zoo.spec("GoodLazy").source == f"{module}.blocks.GoodLazy"


def test_an_import_path_that_cannot_be_loaded_fails_where_used_naming_the_plugin(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    module = add_lazy_plugin(site, "zoo-typo", "Missing", toml='[typo_net]\nlayers = ["ReLU", "Missing"]\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say at discovery: the path is not imported there
        assert "Missing" in zoo.names()
    assert zoo.build("chimera") is not None  # the rest of the registry works
    expected = (
        f"block 'Missing' from zoo-typo 1.0 is registered as '{module}.blocks:Missing', which cannot be loaded: "
        f"AttributeError: module '{module}.blocks' has no attribute 'Missing'"
    )
    with pytest.raises(PluginError, match=re.escape(expected)):
        zoo.build("Missing")
    with pytest.raises(PluginError, match=re.escape(f"typo_net -> layers[1]: {expected}")):
        zoo.build("typo_net")
    assert cli.main(["plugins"]) == 0  # `zoo plugins` imports every path, and says which fail
    out = capsys.readouterr().out
    assert re.search(r"\nzoo_typo .* ok\n(.*\n)* +note: " + re.escape(expected), out)


def test_an_isolated_registry_imports_every_path_so_a_wrong_one_fails_at_once(site: Site) -> None:
    add_lazy_plugin(site, "zoo-typo", "Missing")
    with pytest.raises(PluginError, match=r"plugin 'zoo_typo' from zoo-typo 1\.0 failed: AttributeError: .*'Missing'"):
        with zoo.isolated_registry("zoo-typo"):
            pass
    with zoo.isolated_registry(add_lazy_plugin(site, "zoo-fine", "GoodLazy")) as registry:
        assert registry.resolve("GoodLazy").factory is not None


# --- clashes ------------------------------------------------------------------------------------


@pytest.fixture
def twins(site: Site) -> Site:
    """Two plugins that both provide the block `Twin`; each also declares a model with it."""
    site.add_block_plugin("zoo-left", "Twin", version="1.0", toml='[left_net]\nlayers = ["Twin"]\n')
    site.add_block_plugin(
        "zoo-right", "Twin", version="2.0", toml='[right_net]\nlayers = [{ type = "Twin", features = 3 }]\n'
    )
    return site


def test_a_clash_is_an_error_naming_both_distributions_at_use_only(twins: Site) -> None:
    assert zoo.build("chimera") is not None  # the rest of the registry is untouched
    with pytest.raises(AmbiguousNameError) as caught:
        zoo.build("Twin")
    message = str(caught.value)
    assert "'Twin' is provided by both zoo-left 1.0 and zoo-right 2.0" in message
    assert "'zoo-left:Twin' or 'zoo-right:Twin'" in message and "ZOO_DISABLE_PLUGINS" in message


def test_a_qualified_name_picks_one_provider(twins: Site) -> None:
    assert zoo.build("zoo-left:Twin").made_by == "zoo-left"
    assert zoo.build("zoo_right:Twin", features=3).made_by == "zoo-right"  # PEP 503 spelling is the same dist
    with pytest.raises(
        UnknownNameError, match="'Twin' is not provided by 'zoo-lefty'; it is provided by: zoo-left, zoo-right"
    ):
        zoo.build("zoo-lefty:Twin")


def test_a_plugins_own_declarations_keep_its_own_blocks_despite_a_clash(twins: Site) -> None:
    assert zoo.build("left_net")[0].made_by == "zoo-left"
    assert zoo.build("right_net")[0].made_by == "zoo-right"
    assert zoo.spec("left_net").declaration["layers"] == [{"type": "zoo-left:Twin"}]


def test_a_plugin_cannot_replace_a_built_in_name(site: Site) -> None:
    toml = '[chimera]\nreplace = true\nlayers = [{ type = "Linear", in_features = 20, out_features = 1 }]\n'
    site.add_block_plugin("zoo-shadow", "Linear", version="0.5.0", toml=toml)
    with pytest.warns(zoo.ZooPluginWarning) as caught:
        discovery.current()
    text = "\n".join(str(w.message) for w in caught)
    assert "`replace = true` for 'chimera'" in text and "is ignored" in text
    assert "registers built-in name(s) Linear, chimera: the built-ins stay the default" in text
    assert "'zoo-shadow:NAME'" in text
    assert type(zoo.build("Linear", in_features=2, out_features=3)) is nn.Linear
    assert zoo.build("zoo-shadow:Linear", features=2).made_by == "zoo-shadow"
    assert type(zoo.build("chimera")[2]).__name__ == "FixedHiddenMLP"  # the seed's chimera, not the impostor
    assert report_of("zoo-shadow").shadowed == ["Linear", "chimera"]


def test_replace_in_a_plugin_does_not_win_over_another_plugin(twins: Site) -> None:
    site = twins
    site.add_block_plugin("zoo-usurper", "Usurper", toml='[left_net]\nreplace = true\nlayers = ["Usurper"]\n')
    with pytest.warns(zoo.ZooPluginWarning, match="`replace = true` for 'left_net'"):
        discovery.current()
    with pytest.raises(AmbiguousNameError, match="zoo-left 1.0 and zoo-usurper 1.0"):
        zoo.build("left_net")


def test_the_users_own_file_may_still_replace_a_name(site: Site, write_toml: Callable[..., Path]) -> None:
    path = write_toml('[chimera]\nreplace = true\nlayers = ["ReLU"]\n')
    assert type(zoo.build("chimera", registry=path)[0]) is nn.ReLU
    unmarked = write_toml('[chimera]\nlayers = ["ReLU"]\n')
    with pytest.raises(DuplicateNameError, match="Add `replace = true`"):
        zoo.build("chimera", registry=unmarked)


# --- control: ZOO_DISABLE_PLUGINS and `zoo plugins` ------------------------------------------------


@pytest.mark.parametrize("setting", ["zoo_opt", "zoo-optional", "ZOO_OPTIONAL", "all", "other, zoo-optional"])
def test_disabled_plugins_are_not_even_imported(site: Site, monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    module = site.add_block_plugin("zoo-optional", "OptionalBlock", entry_point="zoo_opt")
    site.add_block_plugin("other", "OtherBlock")
    monkeypatch.setenv(discovery.DISABLE_ENV, setting)
    assert "OptionalBlock" not in zoo.names() and "chimera" in zoo.names()
    assert module not in sys.modules
    assert report_of("zoo-optional").status == "disabled"
    assert ("OtherBlock" in zoo.names()) is (setting in ("zoo_opt", "zoo-optional", "ZOO_OPTIONAL"))


def test_a_misspelt_disable_name_is_reported_with_the_nearest(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.add_block_plugin("zoo-optional", "OptionalBlock", entry_point="optional")
    monkeypatch.setenv(discovery.DISABLE_ENV, "zoo-optinal")
    with pytest.warns(
        zoo.ZooPluginWarning, match="names 'zoo-optinal', which is no installed plugin. Did you mean 'zoo-optional'?"
    ):
        assert "OptionalBlock" in zoo.names()


def test_zoo_plugins_lists_every_plugin_with_status_and_reason(
    twins: Site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = twins
    site.add("zoo-broken", "import zoo_missing_dependency\n", version="0.2.0")
    site.add_block_plugin("zoo-optional", "OptionalBlock", version="3.1", entry_point="optional")
    monkeypatch.setenv(discovery.DISABLE_ENV, "optional")
    assert cli.main(["plugins"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["PLUGIN", "DISTRIBUTION", "MODULE", "LOAD", "STATUS"]
    row = {line.split()[0]: line for line in lines if line and not line.startswith(" ")}
    assert row["zoo"].split()[1:] == ["zoo", zoo.__version__, "zoo._plugins.builtin", row["zoo"].split()[4], "ms", "ok"]
    assert row["zoo_left"].split()[1:4] == ["zoo-left", "1.0", "zoo_left"] and re.search(r"ms +ok$", row["zoo_left"])
    assert row["zoo_broken"].endswith("failed: ModuleNotFoundError: No module named 'zoo_missing_dependency'")
    assert "zoo-broken 0.2.0" in row["zoo_broken"]
    assert row["optional"].split()[1:] == [
        "zoo-optional",
        "3.1",
        "zoo_optional",
        "-",
        "disabled",
        "by",
        "ZOO_DISABLE_PLUGINS",
    ]
    assert re.search(r"\nzoo_left .*\n +1 blocks: Twin\n +1 entries: left_net\n", out)  # indented under their row
    assert "clash: 'Twin' is provided by both zoo-left 1.0 and zoo-right 2.0" in out
    assert err == ""  # the table says it all; no warnings on top


def test_zoo_plugins_with_no_third_party_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(discovery, "_state", {"registry": None, "reports": [], "local": []})
    monkeypatch.setattr(discovery, "_installed", lambda: [])
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "zoo._plugins.builtin" in out and "no third-party plugins installed (entry-point group 'zoo')" in out


# --- isolated registries for plugin authors ---------------------------------------------------------


def plugin_module(name: str, **hooks: Callable[..., None]) -> ModuleType:
    """An in-process plugin: a module whose functions are marked @zoo.hookimpl."""
    module = ModuleType(name)
    for hook, fn in hooks.items():
        fn.__name__ = hook
        setattr(module, hook, zoo.hookimpl(fn))
    return module


def test_isolated_registry_holds_builtins_and_only_the_named_plugins(site: Site) -> None:
    site.add_block_plugin("zoo-installed", "InstalledBlock")
    scale = plugin_module("my_plugin", zoo_blocks=lambda register: register("Scale", nn.Identity))
    with zoo.isolated_registry(scale) as registry:
        assert "Scale" in registry and "InstalledBlock" not in zoo.names()
        assert zoo.build("Scale") is not None and "chimera" in zoo.names()
        assert registry.resolve("Scale").origin == Origin("my_plugin")
    assert "InstalledBlock" in zoo.names() and "Scale" not in zoo.names()


def test_isolated_registry_by_installed_name_loads_that_one_only(site: Site) -> None:
    site.add_block_plugin("zoo-wanted", "WantedBlock", version="4.0", entry_point="wanted")
    site.add_block_plugin("zoo-other", "OtherBlock")
    for name in ("wanted", "zoo-wanted", "zoo_wanted"):
        with zoo.isolated_registry(name) as registry:
            assert "WantedBlock" in registry and "OtherBlock" not in registry
            assert registry.resolve("WantedBlock").origin == Origin("zoo-wanted", "4.0")


def test_isolated_registry_with_an_unknown_plugin_name_suggests_the_nearest(site: Site) -> None:
    site.add_block_plugin("zoo-wanted", "WantedBlock")
    with pytest.raises(UnknownNameError, match="no installed zoo plugin named 'zoo-wantd'. Did you mean 'zoo-wanted'?"):
        with zoo.isolated_registry("zoo-wantd"):
            pass


def test_isolated_registry_raises_for_a_failing_plugin_and_restores_state(site: Site) -> None:
    site.add("zoo-broken", "import zoo_missing_dependency\n", version="0.2.0")
    before = quietly(zoo.names)

    def boom(register: Callable[..., None]) -> None:
        raise RuntimeError("boom")

    with pytest.raises(
        PluginError, match=r"plugin 'zoo_broken' from zoo-broken 0\.2\.0 failed: ModuleNotFoundError"
    ) as caught:
        with zoo.isolated_registry("zoo-broken"):
            pass
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    with pytest.raises(PluginError, match="plugin 'raiser' from raiser failed: RuntimeError: boom"):
        with zoo.isolated_registry(plugin_module("raiser", zoo_blocks=boom)):
            pass
    with pytest.raises(KeyError):
        with zoo.isolated_registry():
            raise KeyError("the test inside failed")
    assert quietly(zoo.names) == before


def test_zoo_register_does_not_leak_into_or_out_of_an_isolated_registry(site: Site) -> None:
    @zoo.register("outside_block")
    class Outside(nn.Identity):
        pass

    with zoo.isolated_registry():
        assert "outside_block" not in zoo.names()

        @zoo.register("inside_block")
        class Inside(nn.Identity):
            pass

        assert "inside_block" in zoo.names()
    assert "outside_block" in zoo.names() and "inside_block" not in zoo.names()


def test_an_in_process_plugin_module_that_is_installed_gets_its_distribution(site: Site) -> None:
    import importlib

    module = importlib.import_module(site.add_block_plugin("zoo-known", "KnownBlock", version="2.5"))
    with zoo.isolated_registry(module) as registry:
        assert registry.resolve("KnownBlock").origin == Origin("zoo-known", "2.5")


@pytest.fixture
def convnets_like_registry(site: Site) -> Iterator[object]:
    """The fixture the README documents for plugin authors, with a stand-in plugin."""
    site.add_block_plugin("zoo-mine", "MineBlock", toml='[mine_net]\nlayers = ["MineBlock"]\n')
    with zoo.isolated_registry("zoo-mine") as registry:
        yield registry


def test_the_documented_fixture_gives_a_plugin_its_own_registry(convnets_like_registry: object) -> None:
    assert zoo.names("mine*") == ["MineBlock", "mine_net"]
    assert zoo.build("mine_net")[0].made_by == "zoo-mine"
