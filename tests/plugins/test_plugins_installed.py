"""Plugins as users meet them: pip-installed packages, each check in a new process with no other code.

Every test builds real wheels of plugins/zoo-* and tests/fixtures/plugins/* and installs them
with pip into a scratch environment (tests/fixtures/scratch_env.py), never into the shared one.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.scratch_env import ScratchEnv, build_wheels

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
PROJECTS = [
    ROOT / "plugins" / "zoo-convnets",
    ROOT / "plugins" / "zoo-attention",
    FIXTURES / "zoo-broken-import",
    FIXTURES / "zoo-broken-hook",
    FIXTURES / "zoo-clash",
    FIXTURES / "zoo-shadow",
    FIXTURES / "zoo-scaled",  # the README's "write a plugin in 20 lines"
]
BROKEN = ("zoo-broken-import", "zoo-broken-hook", "zoo-clash", "zoo-shadow")

pytestmark = pytest.mark.slow  # pip and fresh interpreters: seconds per test


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_wheels(PROJECTS, tmp_path_factory.mktemp("wheels"))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[ScratchEnv]:
    scratch = ScratchEnv.create(tmp_path / "env")
    yield scratch
    shutil.rmtree(scratch.root, ignore_errors=True)


def build_in_new_process(env: ScratchEnv, name: str) -> tuple[int, str, str]:
    """`import zoo; zoo.build(name)` and one forward, in a fresh interpreter; (exit code, stdout, stderr)."""
    code = f"""
import torch, zoo
model = zoo.build({name!r}).eval()
info = zoo.spec({name!r})
print(tuple(model(torch.zeros(info.input_shape)).shape), info.origin)
"""
    done = env.run(code)
    return done.returncode, done.stdout.strip(), done.stderr


def test_resnet18_works_after_pip_install_and_fails_clearly_after_uninstall(
    env: ScratchEnv, wheels: dict[str, Path]
) -> None:
    env.install(wheels["zoo-convnets"])
    code, out, err = build_in_new_process(env, "resnet18")
    assert code == 0, err
    assert out == "(1, 10) zoo-convnets 0.1.0" and err == ""
    env.uninstall("zoo-convnets")
    code, out, err = build_in_new_process(env, "resnet18")
    assert code != 0 and "UnknownNameError: unknown block or entry 'resnet18'" in err
    assert "install the plugin that provides it" in err
    cli = env.zoo("build", "resnet18")
    assert cli.returncode == 2 and cli.stdout == ""
    assert cli.stderr.startswith("zoo: error: unknown block or entry 'resnet18'") and "Traceback" not in cli.stderr


def test_the_readmes_plugin_in_20_lines_works_once_installed(env: ScratchEnv, wheels: dict[str, Path]) -> None:
    env.install(wheels["zoo-scaled"])
    done = env.zoo("build", "scaled_mlp")
    assert done.returncode == 0, done.stderr
    assert "Scale" in done.stdout and "output: (2, 10)" in done.stdout
    shown = env.zoo("show", "scaled_mlp")
    assert "# scaled_mlp: entry from zoo-scaled 0.1.0" in shown.stdout
    assert 'type = "zoo-scaled:Scale"\nfactor = 0.5' in shown.stdout  # qualified: the plugin's own block


def test_an_editable_install_registers_the_same_entry_point(env: ScratchEnv, tmp_path: Path) -> None:
    source = tmp_path / "zoo-convnets"
    shutil.copytree(ROOT / "plugins" / "zoo-convnets", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    env.pip("install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(source))
    code, out, err = build_in_new_process(env, "lenet")
    assert code == 0, err
    assert out == "(1, 10) zoo-convnets 0.1.0"


def test_broken_plugins_installed_beside_leave_everything_else_working(
    env: ScratchEnv, wheels: dict[str, Path]
) -> None:
    env.install(*wheels.values())
    chimera = env.zoo("build", "chimera")
    assert chimera.returncode == 0, chimera.stderr
    assert "Total params: 4,712" in chimera.stdout and "output: ()" in chimera.stdout
    warned = chimera.stderr
    assert (
        "plugin 'broken-import' from zoo-broken-import 0.2.0 failed and was skipped: "
        "ModuleNotFoundError: No module named 'zoo_missing_dependency'"
    ) in warned
    assert (
        "plugin 'broken-hook' from zoo-broken-hook 0.3.0 failed and was skipped: RuntimeError: registry server"
        in warned
    )
    assert "plugin 'shadow' (zoo-shadow 0.5.0): registers built-in name(s) Linear, chimera" in warned
    assert "`replace = true` for 'chimera'" in warned
    assert warned.count("zoo: warning: ") == 4  # once each, one line each, nothing about the healthy plugins

    listing = env.zoo("plugins")
    assert listing.returncode == 0 and listing.stderr == ""
    rows = {line.split()[0]: line for line in listing.stdout.splitlines() if line and not line[0].isspace()}
    assert re.search(r"zoo-convnets 0\.1\.0 +zoo_convnets +[\d.]+ ms +ok$", rows["convnets"])
    assert re.search(r"zoo-attention 0\.1\.0 +zoo_attention +[\d.]+ ms +ok$", rows["attention"])
    assert rows["broken-import"].endswith("failed: ModuleNotFoundError: No module named 'zoo_missing_dependency'")
    assert rows["broken-hook"].endswith("failed: RuntimeError: registry server unreachable")
    assert rows["clash"].endswith(" ok") and rows["shadow"].endswith(" ok")
    assert "clash: 'Residual' is provided by both zoo-clash 0.4.0 and zoo-convnets 0.1.0" in listing.stdout
    assert "clash: 'vgg_block' is provided by both zoo-clash 0.4.0 and zoo-convnets 0.1.0" in listing.stdout
    assert "note: registers built-in name(s) Linear, chimera" in listing.stdout

    check = env.run(
        """
import warnings
warnings.simplefilter("ignore")
import torch, zoo
from torch import nn
resnet = zoo.build("resnet18", input_shape=(2, 3, 32, 32))
vgg = zoo.build("vgg11", input_shape=(1, 1, 32, 32), hidden=16)
print("resnet18", sorted(dict(resnet.b2[0].named_children())), tuple(resnet(torch.zeros(2, 3, 32, 32)).shape))
print("vgg11", type(vgg[0][0]).__name__)
for name in ("vit_tiny", "hybrid_vit_tiny", "clash_net"):
    print(name, tuple(zoo.build(name).eval()(torch.zeros(zoo.spec(name).input_shape)).shape))
try:
    zoo.build("Residual", num_channels=4)
except zoo.AmbiguousNameError as err:
    print("Residual:", err)
print("qualified", type(zoo.build("zoo-clash:Residual", num_channels=4).linear).__name__)
print("Linear", type(zoo.build("Linear", in_features=2, out_features=3)) is nn.Linear)
print("chimera", type(zoo.build("chimera")[2]).__name__)
print("missing", "HalfRegistered" in zoo.names())
"""
    )
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert lines[0] == "resnet18 ['bn1', 'bn2', 'conv1', 'conv2'] (2, 10)"  # its own Residual, not zoo-clash's
    assert lines[1] == "vgg11 Conv2d"
    assert lines[2:5] == ["vit_tiny (2, 10)", "hybrid_vit_tiny (2, 10)", "clash_net (2, 4)"]
    assert lines[5].startswith("Residual: 'Residual' is provided by both zoo-clash 0.4.0 and zoo-convnets 0.1.0.")
    assert "'zoo-clash:Residual' or 'zoo-convnets:Residual'" in lines[5]
    assert lines[6:] == ["qualified Linear", "Linear True", "chimera FixedHiddenMLP", "missing False"]


def test_disabled_broken_plugins_are_silent_and_listed_as_disabled(env: ScratchEnv, wheels: dict[str, Path]) -> None:
    env.install(*(wheels[name] for name in BROKEN))
    quiet = {"ZOO_DISABLE_PLUGINS": "broken-import, zoo-broken-hook,zoo_shadow"}
    chimera = env.zoo("build", "chimera", env=quiet)
    assert chimera.returncode == 0 and chimera.stderr == ""
    listing = env.zoo("plugins", env=quiet)
    rows = {line.split()[0]: line for line in listing.stdout.splitlines() if line and not line[0].isspace()}
    for name in ("broken-import", "broken-hook", "shadow"):
        assert re.search(r" - +disabled by ZOO_DISABLE_PLUGINS$", rows[name])
    assert rows["clash"].endswith(" ok")
    everything = env.zoo("plugins", env={"ZOO_DISABLE_PLUGINS": "all"})
    assert everything.stdout.count("disabled by ZOO_DISABLE_PLUGINS") == 4 and " ok\n" in everything.stdout  # zoo's own


def test_import_zoo_imports_no_plugin_module(env: ScratchEnv, wheels: dict[str, Path]) -> None:
    env.install(*wheels.values())
    modules = ("zoo_convnets", "zoo_attention", "zoo_broken_import", "zoo_broken_hook", "zoo_clash", "zoo_shadow")
    done = env.run(
        "import sys, zoo\n"
        "from zoo._plugins import discovery\n"
        f"print(discovery._state['registry'] is None, [m for m in {modules!r} if m in sys.modules])\n",
        "-X",
        "importtime",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True []"
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "zoo" in imported and "zoo._plugins.discovery" in imported  # the import-time report is there to read
    assert not [m for m in imported if m.split(".")[0] in modules]
    # ...and the first use does load them: the check above can fail
    used = env.run(
        "import sys, warnings, zoo\n"
        "warnings.simplefilter('ignore')\n"
        "zoo.names()\n"
        f"print(sorted(m for m in {modules!r} if m in sys.modules))\n"
    )
    assert used.stdout.strip() == "['zoo_attention', 'zoo_broken_hook', 'zoo_clash', 'zoo_convnets', 'zoo_shadow']"
