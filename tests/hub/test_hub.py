"""zoo.push and zoo.pull against a Hub-compatible server on 127.0.0.1, through the real huggingface_hub client.

Nothing of huggingface_hub is patched: in-process tests pass `endpoint=` and `cache_dir=`, and
the tests that matter most run zoo in a fresh process configured the standard way, through
HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE. Only constants the client documents as settings are
set here (no telemetry call to huggingface.co, never offline unless a test says so).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import constants
from torch import nn

import zoo
from tests.hubserver import HubError as ServerError
from tests.hubserver import HubServer
from zoo import cli
from zoo._errors import HubError, NotMaterializedError, UnknownNameError, WeightsError
from zoo._hub import client

REPO = "org/chimera"
X = torch.arange(40, dtype=torch.float32).reshape(2, 20) / 40  # one fixed input for every comparison


pytestmark = pytest.mark.usefixtures("hub_client_settings")  # every test here, with a server or not


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def push(server: HubServer, model: nn.Module | Path, repo: str = REPO, **kwargs: object) -> str:
    return zoo.push(model, repo, endpoint=server.url, token="test-token", **kwargs)  # type: ignore[arg-type]


def pull(server: HubServer, cache: Path, repo: str = REPO, **kwargs: object) -> nn.Module:
    return zoo.pull(repo, endpoint=server.url, cache_dir=cache, token="test-token", **kwargs)  # type: ignore[arg-type]


def chimera(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.build("chimera")


def output(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


def downloads(server: HubServer) -> list[str]:
    """Files whose bytes the client fetched (GET on /resolve/)."""
    return [path.rsplit("/", 1)[-1] for method, path in server.requests if method == "GET" and "/resolve/" in path]


def run_zoo(
    tmp_path: Path, server: HubServer, code_or_argv: str | list[str], **env: str
) -> subprocess.CompletedProcess[str]:
    """Python code, or `zoo` CLI arguments, in a fresh process configured through the environment only."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ZOO_"))}
    clean |= {"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"} | env
    argv = ["-c", code_or_argv] if isinstance(code_or_argv, str) else ["-m", "zoo.cli", *code_or_argv]
    return subprocess.run([sys.executable, *argv], env=clean, capture_output=True, text=True, timeout=120)


# --- push, then pull -------------------------------------------------------------------------


@pytest.mark.slow  # two fresh processes, each importing torch
def test_push_then_pull_in_a_fresh_process_gives_identical_outputs(server: HubServer, tmp_path: Path) -> None:
    model = chimera()
    url = push(server, model)
    commit = server.resolve(REPO)
    assert url == f"{server.url}/{REPO}/commit/{commit}"
    assert sorted(server.last_commit_files) == ["README.md", "config.json", "model.safetensors"]

    server.clear_requests()
    script = (
        "import json, torch, zoo\n"
        'model = zoo.load("hf://org/chimera")\n'
        "with torch.no_grad():\n"
        "    y = model(torch.arange(40, dtype=torch.float32).reshape(2, 20) / 40)\n"
        "print(json.dumps({'y': [float.hex(v) for v in y.flatten().tolist()], 'source': vars(model.zoo_source),\n"
        "                  'training': model.training}))\n"
    )
    done = run_zoo(tmp_path, server, script)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["y"] == [float.hex(v) for v in output(model).flatten().tolist()]  # bit for bit
    assert result["source"] == {"repo_id": REPO, "revision": "main", "commit": commit, "endpoint": server.url}
    assert result["training"] is False
    assert sorted(downloads(server)) == ["config.json", "model.safetensors"]  # never the card, never code
    assert (tmp_path / "hf-home" / "hub" / "models--org--chimera" / "snapshots" / commit).is_dir()

    # The CLI, offline through HF_HUB_OFFLINE=1: served from that cache with no request at all.
    server.clear_requests()
    copy = tmp_path / "copy"
    done = run_zoo(tmp_path, server, ["pull", REPO, str(copy)], HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    assert server.requests == []
    assert f"pulled {REPO}@main (commit {commit})" in done.stdout and "FixedHiddenMLP" in done.stdout
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "model.safetensors"]
    assert not any(p.is_symlink() for p in copy.iterdir())  # real files, not links into the cache
    assert torch.equal(output(zoo.load(copy)), output(model))


def test_a_second_push_sends_only_what_changed(server: HubServer, cache: Path, tmp_path: Path) -> None:
    model = chimera()
    first = push(server, model)
    commits = len(server.commit_requests)

    assert push(server, model) == first  # the same model: the same bytes, so no commit at all
    assert len(server.commit_requests) == commits

    with torch.no_grad():
        model[1].weight.add_(1.0)
    second = push(server, model, commit_message="nudge one layer")
    # The weights, and config.json whose save id follows them; the card is the same bytes.
    assert sorted(server.last_commit_files) == ["config.json", "model.safetensors"]
    assert second != first and second.endswith(server.resolve(REPO))
    assert torch.equal(output(pull(server, cache)), output(model))

    # A folder: edit the card by hand and push it; only the card goes.
    folder = client.copy_snapshot(client.fetch(REPO, cache_dir=cache, endpoint=server.url), tmp_path / "folder")
    (folder / "README.md").write_text("# my chimera\n\nTrained on nothing at all.\n")
    push(server, folder)
    assert server.last_commit_files == ["README.md"]
    assert server.get_file(REPO, "README.md") == b"# my chimera\n\nTrained on nothing at all.\n"


def test_sharded_push_and_pull_and_back_to_one_file(server: HubServer, cache: Path) -> None:
    model = chimera()
    push(server, model, max_shard_size=2000)
    shards = sorted(set(json.loads(server.get_file(REPO, "model.safetensors.index.json"))["weight_map"].values()))
    assert len(shards) > 2

    server.clear_requests()
    pulled = pull(server, cache)
    assert torch.equal(output(pulled), output(model))
    assert sorted(downloads(server)) == sorted(["config.json", "model.safetensors.index.json", *shards])

    # Pushed again as one file: the stale shards and index go in the same commit. config.json is
    # the same bytes (the same model), the card counts one file now.
    push(server, model)
    assert sorted(server.commit_requests[-1]) == sorted(
        [("deletedFile", s) for s in shards] + [("deletedFile", "model.safetensors.index.json")]
        + [("file", "model.safetensors"), ("file", "README.md")]
    )  # fmt: skip
    assert torch.equal(output(pull(server, cache)), output(model))


# --- revisions -------------------------------------------------------------------------------


def test_pull_pinned_to_a_tag_or_a_commit(server: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = chimera(0), chimera(1)
    push(server, old)
    v1 = server.create_tag(REPO, "v1.0")
    push(server, new)
    v2 = server.resolve(REPO)

    by_tag = pull(server, cache, revision="v1.0")
    assert torch.equal(output(by_tag), output(old))
    assert (by_tag.zoo_source.revision, by_tag.zoo_source.commit) == ("v1.0", v1)
    assert torch.equal(output(pull(server, cache, repo=f"{REPO}@v1.0")), output(old))
    by_commit = pull(server, cache, revision=v1)
    assert torch.equal(output(by_commit), output(old)) and by_commit.zoo_source.commit == v1
    latest = pull(server, cache)
    assert torch.equal(output(latest), output(new)) and latest.zoo_source.commit == v2

    server.clear_requests()  # a full commit id that is cached needs no request at all
    assert pull(server, cache, revision=v1).zoo_source.commit == v1
    assert server.requests == []

    # zoo.load("hf://…") takes the endpoint and the cache from huggingface_hub's settings.
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert torch.equal(output(zoo.load(f"hf://{REPO}@v1.0")), output(old))
    assert zoo.load(f"hf://{REPO}").zoo_source.commit == v2


def test_unknown_repo_or_revision_says_what_exists(server: HubServer, cache: Path) -> None:
    push(server, chimera())
    server.create_tag(REPO, "v1.0")
    with pytest.raises(HubError, match=f"repository 'org/chimerra' not found at {server.url}"):
        pull(server, cache, repo="org/chimerra")
    with pytest.raises(
        HubError, match=r"no revision 'v1\.1' in org/chimera\. Did you mean 'v1\.0'\? Branches and tags: main, v1\.0"
    ):
        pull(server, cache, revision="v1.1")
    with pytest.raises(HubError, match="two revisions"):
        pull(server, cache, repo=f"{REPO}@v1.0", revision="main")
    for address in ("hf://", "hf://org//chimera", "chimera", "org/chi mera"):
        with pytest.raises(HubError, match="write it as org/name"):
            pull(server, cache, repo=address)
    with pytest.raises(HubError, match="empty revision after '@'"):
        pull(server, cache, repo="hf://org/chimera@")
    with pytest.raises(HubError, match="not a Hub address"):
        client.parse_uri("org/chimera")
    assert client.parse_uri("hf://org/chimera@refs/pr/1") == ("org/chimera", "refs/pr/1")


class MovingBranchServer(HubServer):
    """Commits to main right after answering a listing, `moves` times: the branch moves under a pull."""

    moves = 0

    def _dispatch(self, req: Any) -> Any:
        response = super()._dispatch(req)
        if self.moves and req.segments[:4] == ["api", "models", *REPO.split("/")] and "revision" in req.segments:
            self.moves -= 1
            self.put_files(REPO, {"notes.txt": f"moved {self.moves}".encode()})
        return response


def test_a_branch_that_moves_during_a_pull_is_listed_again(cache: Path) -> None:
    with MovingBranchServer() as server:
        model = chimera()
        push(server, model)
        server.moves = 1
        pulled = pull(server, cache)
        assert pulled.zoo_source.commit == server.resolve(REPO)  # the commit after the move, consistently
        assert torch.equal(output(pulled), output(model))
        assert [p for _, p in server.requests].count(f"/api/models/{REPO}/revision/main") == 2

        server.moves = 3
        with pytest.raises(HubError, match="moved to a new commit three times while zoo was fetching it"):
            pull(server, cache)
        assert server.errors == []


# --- offline ---------------------------------------------------------------------------------


def test_offline_pull_is_served_from_the_cache_with_no_request(
    server: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = chimera()
    push(server, model)
    pull(server, cache)

    server.clear_requests()
    assert torch.equal(output(pull(server, cache, local_files_only=True)), output(model))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    assert torch.equal(output(pull(server, cache)), output(model))
    assert server.requests == []

    with pytest.raises(HubError, match=rf"org/chimera@v1\.0 is not in the cache at {cache} .*HF_HUB_OFFLINE=1"):
        pull(server, cache, revision="v1.0")
    with pytest.raises(HubError, match="org/other@main is not in the cache"):
        pull(server, cache, repo="org/other")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        push(server, model)
    assert server.requests == []


def test_a_partly_cached_repo_is_not_served_offline(server: HubServer, cache: Path) -> None:
    push(server, chimera(), max_shard_size=2000)
    pull(server, cache)
    snapshot = next((cache / "models--org--chimera" / "snapshots").iterdir())
    shard = sorted(snapshot.glob("model-*-of-*.safetensors"))[1]
    shard.unlink()  # a cache pruned by hand
    with pytest.raises(HubError, match=f"{shard.name} missing"):
        pull(server, cache, local_files_only=True)
    assert pull(server, cache).zoo_source.commit == snapshot.name  # online, the gap is fetched again


# --- the network failing ---------------------------------------------------------------------


def test_a_dropped_connection_is_retried(server: HubServer, cache: Path) -> None:
    model = chimera()
    push(server, model)
    server.fail_next_download("model.safetensors", after_bytes=100)
    assert torch.equal(output(pull(server, cache)), output(model))
    assert downloads(server).count("model.safetensors") == 2  # the cut one, then the retry


@pytest.mark.slow  # the client waits 1 s before each of its 5 retries
def test_repeated_drops_give_a_clear_error_and_no_corrupt_cache(server: HubServer, cache: Path) -> None:
    model = chimera()
    push(server, model)
    for _ in range(6):  # one more cut with no progress than the client retries
        server.fail_next_download("model.safetensors", after_bytes=0)
    with pytest.raises(HubError, match=f"cannot pull org/chimera@main: the connection to {server.url} failed"):
        pull(server, cache)
    stored = cache / "models--org--chimera"
    assert not [p for p in stored.rglob("*") if p.name.endswith(".incomplete")]
    blobs = {p.read_bytes() for p in (stored / "blobs").iterdir()}
    assert blobs == {server.get_file(REPO, "config.json")}  # only the complete file; no part of the weights
    with pytest.raises(HubError, match="not in the cache"):
        pull(server, cache, local_files_only=True)
    assert torch.equal(output(pull(server, cache)), output(model))  # the server is back: all is well


def test_an_unreachable_server_is_a_clear_error(cache: Path) -> None:
    with pytest.raises(HubError, match=r"cannot pull org/chimera@main: the connection to http://127\.0\.0\.1:9 failed"):
        zoo.pull(REPO, endpoint="http://127.0.0.1:9", cache_dir=cache)
    with pytest.raises(
        HubError, match=r"cannot push to org/chimera: the connection to http://127\.0\.0\.1:9 failed"
    ) as push:
        zoo.push(chimera(), REPO, endpoint="http://127.0.0.1:9", token="test-token")
    assert "HF_HUB_OFFLINE" not in str(push.value)  # the cache cannot stand in for a push


class RefusingServer(HubServer):
    """Answers the listing, but refuses the file requests of one path with `status` (and an error code)."""

    refuse: tuple[str, int, str | None] | None = None

    def _dispatch(self, req: Any) -> Any:
        if self.refuse and req.method == "HEAD" and "resolve" in req.segments and req.raw_path.endswith(self.refuse[0]):
            path, status, code = self.refuse
            raise ServerError(status, f"{path} is refused here", code, {"X-Repo-Commit": self.resolve(REPO)})
        return super()._dispatch(req)


def test_file_requests_refused_by_the_server(cache: Path) -> None:
    with RefusingServer() as server:
        push(server, chimera())
        server.refuse = ("config.json", 403, None)
        with pytest.raises(HubError, match=f"cannot pull org/chimera@main: {server.url} answered HTTP 403"):
            pull(server, cache)
        server.refuse = ("model.safetensors", 404, "EntryNotFound")  # the weights came while config.json was refused
        with pytest.raises(HubError, match=f"the repo lists a file that {server.url} does not serve"):
            pull(server, cache / "another")
        server.refuse = None
        assert pull(server, cache / "another").zoo_source.commit == server.resolve(REPO)
        assert server.errors == []


# --- safety ----------------------------------------------------------------------------------


def test_a_pickle_only_repo_is_refused_without_downloading_it(server: HubServer, cache: Path) -> None:
    push(server, chimera())
    config = server.get_file(REPO, "config.json")
    server.put_files("org/pickled", {"config.json": config, "pytorch_model.bin": b"\x80\x04K\x01."})
    server.clear_requests()
    with pytest.raises(HubError, match=r"only pickled weights \(pytorch_model\.bin\)\. zoo never unpickles"):
        pull(server, cache, repo="org/pickled")
    assert server.requests == [("GET", "/api/models/org/pickled/revision/main")]  # the listing, nothing else

    server.put_files("org/no-config", {"model.safetensors": server.get_file(REPO, "model.safetensors")})
    with pytest.raises(HubError, match="has weights but no config.json"):
        pull(server, cache, repo="org/no-config")
    server.put_files("org/empty", {"notes.txt": b"hello"})
    with pytest.raises(HubError, match=r"not a zoo model\. It holds: notes\.txt"):
        pull(server, cache, repo="org/empty")


def test_a_block_that_is_not_installed_names_its_distribution(server: HubServer, cache: Path) -> None:
    push(server, chimera())
    config = json.loads(server.get_file(REPO, "config.json"))
    config["declaration"]["layers"][1]["type"] = "FancyLinear"
    config["provenance"]["FancyLinear"] = "zoo-fancy 2.1.0"
    server.put_files(REPO, {"config.json": json.dumps(config).encode()})
    with pytest.raises(UnknownNameError) as err:
        pull(server, cache)
    message = str(err.value)
    assert "'FancyLinear'" in message and "zoo-fancy 2.1.0" in message and "pip install 'zoo-fancy==2.1.0'" in message


@pytest.mark.slow  # a fresh process
def test_a_plugin_block_missing_in_another_process(server: HubServer, tmp_path: Path) -> None:
    pytest.importorskip("zoo_attention", reason="the example plugin zoo-attention is not installed")
    torch.manual_seed(0)
    push(server, zoo.build("transformer_encoder_tiny"), repo="org/encoder")
    done = run_zoo(tmp_path, server, ["pull", "org/encoder"], ZOO_DISABLE_PLUGINS="zoo-attention")
    assert done.returncode == 2, done.stderr
    assert "zoo-attention 0.1.0" in done.stderr and "pip install 'zoo-attention==0.1.0'" in done.stderr
    assert "Traceback" not in done.stderr


def test_size_limits_are_checked_before_parsing(
    server: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    push(server, chimera(), max_shard_size=2000)
    pull(server, cache)  # cached while the limit is the real one
    monkeypatch.setattr(client, "MAX_JSON_BYTES", 64)
    server.clear_requests()
    with pytest.raises(HubError, match=r"config\.json is \d[\d,]* bytes, over zoo's limit of 64"):
        pull(server, cache, revision="main")
    assert downloads(server) == []  # refused from the listing: not even downloaded
    with pytest.raises(HubError, match=r"config\.json is \d[\d,]* bytes, over zoo's limit of 64"):
        pull(server, cache, local_files_only=True)  # from the cache: checked before it is parsed

    # A safetensors header that claims 1 TiB: refused by the reader, nothing allocated.
    hostile = struct.pack("<Q", 2**40) + b"{}"
    server.put_files("org/hostile", {"config.json": server.get_file(REPO, "config.json"), "model.safetensors": hostile})
    monkeypatch.setattr(client, "MAX_JSON_BYTES", 16 * 2**20)
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        pull(server, cache, repo="org/hostile")


def test_shard_names_must_stay_inside_the_repo(server: HubServer, cache: Path) -> None:
    push(server, chimera())
    index = {"weight_map": {"0.linear.weight": "../../../outside.safetensors"}}
    server.put_files("org/escape", {"config.json": server.get_file(REPO, "config.json"),
                                    "model.safetensors.index.json": json.dumps(index).encode()})  # fmt: skip
    with pytest.raises(
        HubError, match=r"shard name '\.\./\.\./\.\./outside\.safetensors' is not a \.safetensors file inside"
    ):
        pull(server, cache, repo="org/escape")
    server.put_files("org/escape", {"model.safetensors.index.json": b"[1, 2, 3]"})
    with pytest.raises(HubError, match="not a safetensors index"):
        pull(server, cache, repo="org/escape")
    index = {"weight_map": {"0.linear.weight": "model-00001-of-00002.safetensors"}}
    server.put_files("org/escape", {"model.safetensors.index.json": json.dumps(index).encode()})
    with pytest.raises(HubError, match=r"names shards the repo does not have: model-00001-of-00002\.safetensors"):
        pull(server, cache, repo="org/escape")


# --- push's own errors, branches, devices ----------------------------------------------------


def test_push_refuses_what_zoo_could_not_load_back(server: HubServer, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such folder"):
        push(server, tmp_path / "missing")
    (tmp_path / "weights-only").mkdir()
    (tmp_path / "weights-only" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(
        WeightsError, match=r"no config\.json, so it was not written by zoo\.save \(it holds: pytorch_model\.bin\)"
    ):
        push(server, tmp_path / "weights-only")
    folder = zoo.save(chimera(), tmp_path / "saved")
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="neither model.safetensors nor"):
        push(server, folder)
    with pytest.raises(HubError, match="push takes a model zoo built .* this Linear has none"):
        push(server, nn.Linear(3, 4))
    with pytest.raises(HubError, match="nn.Module or a folder"):
        zoo.push(42, REPO, endpoint=server.url)  # type: ignore[arg-type]
    with pytest.raises(NotMaterializedError):
        push(server, zoo.build("lazy_mlp"))
    with pytest.raises(HubError, match="create_pr opens a pull request against main"):
        push(server, chimera(), branch="dev", create_pr=True)
    with pytest.raises(HubError, match="HTTP 404"):  # this server has no pull requests: its refusal is passed on
        push(server, chimera(), create_pr=True)
    assert server.commit_requests == []  # nothing was committed by any of these


def test_push_to_a_branch_creates_it_and_leaves_main(server: HubServer, cache: Path) -> None:
    push(server, chimera(0))
    main = server.resolve(REPO)
    push(server, chimera(1), branch="experiment")
    assert server.resolve(REPO) == main
    assert torch.equal(output(pull(server, cache, revision="experiment")), output(chimera(1)))


def test_pull_with_dtype_and_device_map(server: HubServer, cache: Path) -> None:
    model = chimera()
    push(server, model)
    doubled = pull(server, cache, dtype=torch.float64)
    assert {p.dtype for p in doubled.parameters()} == {torch.float64}
    mapped = pull(server, cache, device_map={"": "cpu"})
    assert torch.equal(output(mapped), output(model))
    with pytest.raises(zoo.DeviceError, match="not both"):
        pull(server, cache, device="cpu", device_map="auto")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pull_onto_a_gpu(server: HubServer, cache: Path) -> None:
    model = chimera()
    push(server, model)
    pulled = pull(server, cache, device="cuda:0")
    assert {p.device.type for p in pulled.parameters()} == {"cuda"}
    with torch.no_grad():
        assert torch.allclose(pulled(X.cuda()).cpu(), output(model))


# --- the command line ------------------------------------------------------------------------


def test_cli_push_and_pull(server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def zoo_cli(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = zoo_cli("push", "mlp", "org/mlp", "--set", "hidden=32", "--endpoint", server.url)
    assert code == 0, err
    assert out.strip() == f"pushed 'mlp' to org/mlp: {server.url}/org/mlp/commit/{server.resolve('org/mlp')}"
    commits = len(server.commit_requests)
    assert zoo_cli("push", "mlp", "org/mlp", "--set", "hidden=32", "--endpoint", server.url)[0] == 0
    assert len(server.commit_requests) == commits  # same name, same seed: the same bytes, nothing sent

    cache, copy = tmp_path / "cache", tmp_path / "copy"
    code, out, err = zoo_cli("pull", "org/mlp", str(copy), "--cache-dir", str(cache), "--endpoint", server.url)
    assert code == 0, err
    assert "pulled org/mlp@main" in out and "(2, 32)" in out
    torch.manual_seed(0)
    assert torch.equal(output(zoo.load(copy)), output(zoo.build("mlp", hidden=32)))

    code, out, err = zoo_cli("push", str(copy), "org/mlp-copy", "--endpoint", server.url)
    assert code == 0, err
    assert server.get_file("org/mlp-copy", "model.safetensors") == (copy / "model.safetensors").read_bytes()

    server.clear_requests()
    code, _, err = zoo_cli("pull", "org/mlp", str(copy), "--endpoint", server.url)
    assert code == 2 and "exists and is not empty" in err
    assert server.requests == []  # refused before any download
    code, _, err = zoo_cli("pull", "org/nope", "--cache-dir", str(cache), "--endpoint", server.url)
    assert code == 2 and "repository 'org/nope' not found" in err and "Traceback" not in err
    code, _, err = zoo_cli("push", str(tmp_path / "nowhere"), "org/x", "--endpoint", server.url)
    assert code == 2 and "no such folder" in err
    code, _, err = zoo_cli("push", str(copy), "org/x", "--set", "hidden=8", "--endpoint", server.url)
    assert code == 2 and "is a folder" in err
