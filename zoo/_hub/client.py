"""Hub repos to local snapshot folders and back: a declaration and safetensors, never code.

The only zoo module that imports huggingface_hub. A repo holds what `zoo.save` writes:
config.json (the resolved declaration and the provenance of every block), model.safetensors
or shards listed in model.safetensors.index.json, and a README.md model card. Pulling
rebuilds the model from the declaration with the blocks installed here (zoo._api reads the
snapshot folder `fetch` returns), so a repo can never run code on this machine.

Settings are huggingface_hub's own: HF_ENDPOINT (a self-hosted Hub), HF_HOME or HF_HUB_CACHE
(the cache), HF_TOKEN, HF_HUB_OFFLINE. The `endpoint=`, `cache_dir=` and `token=` keywords
override them per call. Offline (HF_HUB_OFFLINE=1 or `local_files_only=True`) a pull sends no
request at all and is served from the cache.

Limits, checked before anything is parsed: config.json and the shard index at most
MAX_JSON_BYTES (16 MiB) each, from the repo listing before they are downloaded, and again on
the downloaded file (a server can under-report) or on disk when served from the cache; each
safetensors header at most 100 MB (the safetensors reader's own limit, checked by
zoo._weights.reader before any tensor is read). JSON is parsed by zoo._files.jsonio, within its limits.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TypeVar

import httpx2
import huggingface_hub
from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # public, documented
from torch import nn

from zoo._build import builder
from zoo._errors import HubError, WeightsError, ZooError, did_you_mean, listing
from zoo._files import fsio, jsonio
from zoo._hub.address import URI_SCHEME
from zoo._language.registry import Registry
from zoo._saved import folder, foreign
from zoo._saved.card import CARD_FILE
from zoo._saved.config import CONFIG_FILE, TransformersConfig, load_weights_hint, read_config
from zoo._weights import layout, reader

SINGLE_FILE = layout.MODEL_FILE
INDEX_FILE = layout.INDEX_FILE
MAX_JSON_BYTES = jsonio.MAX_BYTES  # config.json and the shard index (16 MiB); real ones are a few KiB
MAX_PARALLEL_DOWNLOADS = 8
# Weights that only an unpickler can read: zoo refuses them rather than run what they contain.
# Files a push replaces: stale weights of an earlier push must go (single file ↔ shards).
_WEIGHT_PATTERNS = [SINGLE_FILE, "model-*-of-*.safetensors", INDEX_FILE]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

T = TypeVar("T")


@dataclass(frozen=True)
class HubSource:
    """Where a pulled model came from; kept on the model as `model.zoo_source`."""

    repo_id: str
    revision: str  # what was asked for: a branch, a tag or a commit ("main" by default)
    commit: str  # the full commit id it resolved to: pull again with revision=commit for the same bytes
    endpoint: str


def source_of(model: nn.Module) -> HubSource | None:
    """Where zoo.pull got `model` from, or None for a model it did not pull."""
    source = model.__dict__.get("zoo_source")
    return source if isinstance(source, HubSource) else None


@dataclass(frozen=True)
class Snapshot:
    """A repo's files at one commit, complete in the local cache."""

    repo_id: str
    revision: str
    commit: str
    folder: Path  # the cache's snapshot folder: config.json and the weights
    files: tuple[str, ...]  # what zoo needs, relative to `folder`
    endpoint: str  # the server it came from


# ----------------------------------------------------------------------------------- push


def upload(
    model_or_dir: nn.Module | str | Path,
    repo_id: str,
    *,
    branch: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = None,
    endpoint: str | None = None,
) -> str:
    """zoo.push: a model saved reproducibly (or a folder zoo.save wrote), uploaded as one commit (see zoo.push)."""
    _check_repo_id(repo_id)
    if huggingface_hub.is_offline_mode():
        raise HubError(f"cannot push {repo_id}: HF_HUB_OFFLINE is set, so zoo sends no request. Unset it to push.")
    if create_pr and branch not in (None, "main"):
        said = f"cannot push {repo_id}: create_pr opens a pull request against main; do not pass"
        raise HubError(f"{said} branch='{branch}'.", cli=f"{said} --branch {branch} with --create-pr.")
    api = HfApi(endpoint=endpoint, token=token)
    with _folder_to_push(model_or_dir, max_shard_size) as (folder, name):
        with _hub_errors(f"push to {repo_id}", repo_id, branch, api.endpoint, api):
            api.create_repo(repo_id, private=private, exist_ok=True)
            if branch not in (None, "main"):
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=branch,
                commit_message=commit_message or f"Upload {name} with zoo",
                create_pr=create_pr,
                delete_patterns=_WEIGHT_PATTERNS,
            )
    return str(info.pr_url or info.commit_url)


@contextmanager
def _folder_to_push(
    model_or_dir: nn.Module | str | Path, max_shard_size: int | str | None
) -> Iterator[tuple[Path, str]]:
    """The folder to upload and a name for the commit message; a model is saved to a temporary folder."""
    if isinstance(model_or_dir, nn.Module):
        info = builder.build_info(model_or_dir)
        if info is None:  # weights alone: zoo.pull could not tell which model to build
            raise HubError(
                f"push takes a model zoo built (zoo.build, zoo.load or zoo.pull), so that zoo.pull can rebuild it "
                f"from its declaration; this {type(model_or_dir).__name__} has none. Declare it in a registry file "
                "and build it with zoo.build, then copy its weights in with model.load_state_dict."
            )
        with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
            folder.write_reproducible(model_or_dir, Path(tmp), max_shard_size)
            yield Path(tmp), info.name
        return
    if not isinstance(model_or_dir, (str, Path)):
        raise HubError(f"push takes an nn.Module or a folder written by zoo.save, not {type(model_or_dir).__name__}.")
    path = Path(model_or_dir)
    _check_model_folder(path)
    yield path, path.resolve().name


def _check_model_folder(path: Path) -> None:
    """Refuse a folder zoo.load could not read back: checks config.json and every weights header, reads no tensor."""
    config = read_config(path)  # raises WeightsError for no such folder or a malformed config.json
    if config is None:
        present = sorted(p.name for p in path.iterdir())
        said = (
            f"cannot push {path}: it has no {CONFIG_FILE}, so it was not written by zoo.save "
            f"(it holds: {listing(present)})."
        )
        raise WeightsError(
            f"{said} Save the model with zoo.save(model, '{path}'), or push the model itself.",
            cli=f"{said} Save the model with zoo save NAME {path}, or push a declared name: zoo push NAME REPO_ID.",
        )
    if isinstance(config, TransformersConfig):  # transformers wrote it: zoo.pull must know the entry that builds it
        foreign.entry_for(config, builder.registry_for(None), str(path))
    reader.inspect(path)  # raises WeightsError for missing, pickled, inconsistent or corrupt weights


# ----------------------------------------------------------------------------------- pull


def fetch(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    weights_only: bool = False,
    registry: Registry | None = None,
) -> Snapshot:
    """Make sure config.json and the weights of `repo_id` at `revision` are in the cache.

    Online, one request lists the repo at `revision`; then config.json is fetched under the
    revision's name (so the cache maps the name to the commit for later offline use) and
    checked before any weights are fetched, under the commit id: zoo's record, or a config
    transformers wrote for a model_type an entry of `registry` (default: the installed ones) declares.
    With `weights_only` (zoo.load_weights), the weights alone: model.safetensors, or the index
    and its shards; the first of them is fetched under the revision's name instead.
    A full commit id already cached sends no request.
    Takes the same arguments as `pull`; returns the cached Snapshot.

    Raises:
        HubError: as for pull; and, unless `weights_only`, a repo that is not a zoo model (no
            config.json, or another library's), before any weights are downloaded.
    """
    repo_id, revision = _split_revision(repo_id, revision)
    offline = local_files_only or huggingface_hub.is_offline_mode()
    if offline or _COMMIT.match(revision):
        cached = _from_cache(repo_id, revision, cache_dir, _endpoint(endpoint), offline, weights_only, registry)
        if cached is not None:
            return cached
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(f"pull {repo_id}@{revision}", repo_id, revision, api.endpoint, api):
        return _fetch_online(api, repo_id, revision, cache_dir, token, weights_only, registry)


def address(repo_id: str, revision: str | None) -> str:
    """The address zoo.load and zoo.load_weights take: hf://org/name, with @revision unless it is main."""
    at = f"@{revision}" if revision and revision != constants.DEFAULT_REVISION else ""
    return f"{URI_SCHEME}{repo_id}{at}"


def _fetch_online(
    api: HfApi,
    repo_id: str,
    revision: str,
    cache_dir: str | Path | None,
    token: str | None,
    weights_only: bool,
    registry: Registry | None,
) -> Snapshot:
    where = f"{repo_id}@{revision}"

    def download(filename: str, rev: str) -> Path:
        return Path(
            hf_hub_download(repo_id, filename, revision=rev, cache_dir=cache_dir, token=token, endpoint=api.endpoint)
        )

    for _ in range(3):  # the branch may move between the listing and the first download: list again
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        commit = str(info.sha)
        sizes = {s.rfilename: s.size for s in info.siblings or ()}
        _check_listing(sizes, where, address(repo_id, revision), weights_only)
        # zoo.load's order (and transformers'): a single file wins over an index.
        weights_or_index = SINGLE_FILE if SINGLE_FILE in sizes else INDEX_FILE
        # The first file under the revision's name, so that the cache records name → commit for offline use.
        first = download(weights_or_index if weights_only else CONFIG_FILE, revision)
        if first.parent.name == commit:
            break
    else:
        raise HubError(f"{where} moved to a new commit three times while zoo was fetching it; try again.")
    files: tuple[str, ...] = ()
    if not weights_only:  # a foreign config.json is refused here, before any weights are downloaded
        _check_size(first, f"{where}: {CONFIG_FILE}")  # the listing's sizes are the server's word, not the file's
        _check_config(first.parent, repo_id, revision, registry)
        files = (CONFIG_FILE,)
        first = download(weights_or_index, commit)
    done = Snapshot(repo_id, revision, commit, first.parent, (*files, weights_or_index), api.endpoint.rstrip("/"))
    if weights_or_index == SINGLE_FILE:
        return done
    shards = _shards_in_index(first, f"{where}: {INDEX_FILE}")
    missing = [s for s in shards if s not in sizes]
    if missing:
        raise HubError(f"{where}: {INDEX_FILE} names shards the repo does not have: {listing(missing)}.")
    _parallel([partial(download, shard, commit) for shard in shards])
    return replace(done, files=(*done.files, *shards))


def _check_config(folder: Path, repo_id: str, revision: str, registry: Registry | None) -> None:
    """Refuse a config.json zoo cannot build from (a Mixin's, an undeclared model_type) before weights are fetched."""
    shown_as = address(repo_id, revision)
    try:
        config = read_config(folder, shown_as=shown_as)
        if isinstance(config, TransformersConfig):  # transformers': an installed entry must declare it
            foreign.entry_for(config, registry if registry is not None else builder.registry_for(None), shown_as)
    except WeightsError as err:
        said = f"{repo_id}@{revision} is not a model zoo can build: "
        raise HubError(f"{said}{err}", cli=f"{said}{err.for_cli()}") from err


def _check_listing(sizes: Mapping[str, int | None], where: str, shown_as: str, weights_only: bool) -> None:
    """What the repo holds must be safetensors weights (and a config.json unless `weights_only`), sizes in bounds."""
    names = list(sizes)
    if SINGLE_FILE not in sizes and INDEX_FILE not in sizes:
        pickles = [n for n in names if n.endswith(layout.PICKLE_SUFFIXES)]
        if pickles:
            raise HubError(
                f"{where} has only pickled weights ({listing(pickles)}). zoo never unpickles: loading a pickle "
                f"runs whatever code it holds. Ask the author for {SINGLE_FILE}, or convert it yourself from "
                "a source you trust."
            )
        others = [n for n in names if n.endswith(".safetensors")]
        said = (
            f"{where} has no {SINGLE_FILE} or {INDEX_FILE}, so it "
            f"{'holds no weights zoo can find' if weights_only else 'is not a zoo model'}. It holds: {listing(names)}."
        )
        download = " To load one of its safetensors files, download it (huggingface_hub.hf_hub_download) and pass"
        raise HubError(
            said + (f"{download} its path to zoo.load_weights." if others else ""),
            cli=said + (f"{download} its path to zoo load-weights." if others else ""),
        )
    if CONFIG_FILE not in sizes and not weights_only:
        said = f"{where} has weights but no {CONFIG_FILE}, so it is not a zoo model (it holds: {listing(names)}). "
        raise HubError(said + load_weights_hint(shown_as), cli=said + load_weights_hint(shown_as, cli=True))
    for name in (CONFIG_FILE, INDEX_FILE) if not weights_only else (INDEX_FILE,):
        size = sizes.get(name)
        if size is not None and size > MAX_JSON_BYTES:
            raise HubError(
                f"{where}: {name} is {size:,} bytes, over zoo's limit of {MAX_JSON_BYTES:,}; "
                "a real one is a few KiB, so zoo does not download it."
            )


def _from_cache(
    repo_id: str,
    revision: str,
    cache_dir: str | Path | None,
    endpoint: str,
    strict: bool,
    weights_only: bool,
    registry: Registry | None,
) -> Snapshot | None:
    """The snapshot from the cache alone, sending no request; None (or HubError when `strict`) if incomplete."""
    where = f"{repo_id}@{revision}"

    def cached(filename: str, rev: str) -> Path | None:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=rev)
        return Path(found) if isinstance(found, str) else None

    def missing(what: str) -> Snapshot | None:
        if not strict:
            return None
        cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
        raise HubError(
            f"{where} is not in the cache at {cache} ({what}), and zoo is offline "
            "(HF_HUB_OFFLINE=1 or local_files_only=True), so it sends no request. Pull it once online, "
            "or pass the cache_dir it was pulled into."
        )

    if weights_only:  # the weights file or the index was fetched under the revision's name
        first = cached(SINGLE_FILE, revision) or cached(INDEX_FILE, revision)
        if first is None:
            return missing(f"no {SINGLE_FILE} or {INDEX_FILE}")
        commit, folder, files = first.parent.name, first.parent, []
    else:
        config = cached(CONFIG_FILE, revision)
        if config is None:
            return missing(f"no {CONFIG_FILE}")
        _check_size(config, f"{where}: {CONFIG_FILE}")
        _check_config(config.parent, repo_id, revision, registry)
        commit, folder, files = config.parent.name, config.parent, [CONFIG_FILE]
    index = cached(INDEX_FILE, commit) if cached(SINGLE_FILE, commit) is None else None
    if index is not None:
        _check_size(index, f"{where}: {INDEX_FILE}")
        shards = _shards_in_index(index, f"{where}: {INDEX_FILE}")
        files.append(INDEX_FILE)
    else:
        shards = [SINGLE_FILE]
    absent = [s for s in shards if cached(s, commit) is None]
    if absent:
        return missing(f"{listing(absent)} missing")
    return Snapshot(repo_id, revision, commit, folder, (*files, *shards), endpoint)


def _shards_in_index(path: Path, where: str) -> list[str]:
    """The shard files a safetensors index names, in order; each must be a plain relative path."""
    index = jsonio.read(path, where, max_bytes=MAX_JSON_BYTES, error=HubError)
    try:
        weight_map = index["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise HubError(f"{where}: not a safetensors index (a JSON object with a 'weight_map'): {err}") from err
    for shard in shards:
        parts = PurePosixPath(shard).parts if isinstance(shard, str) else ()
        # Backslashes and drive letters are separators on Windows, where the cache might live; NUL and
        # names longer than any file system takes fail in the client with an OSError.
        foreign = isinstance(shard, str) and (any(c in shard for c in "\\:\0") or len(shard.encode()) > 1024)
        if not parts or foreign or shard.startswith("/") or ".." in parts or not shard.endswith(".safetensors"):
            raise HubError(f"{where}: the shard name {shard!r} is not a .safetensors file inside the repo.")
    return shards


def _check_size(path: Path, where: str) -> None:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise HubError(f"{where} is {size:,} bytes, over zoo's limit of {MAX_JSON_BYTES:,}; zoo does not parse it.")


def _parallel(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Run downloads side by side; the first failure is raised once all have stopped."""
    if len(jobs) == 1:
        return [jobs[0]()]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_DOWNLOADS, len(jobs)), thread_name_prefix="zoo-pull") as pool:
        futures = [pool.submit(job) for job in jobs]
        return [future.result() for future in futures]


# ----------------------------------------------------------------------- addresses and copies


def parse_uri(uri: str) -> tuple[str, str | None]:
    """`"hf://org/name@revision"` → `("org/name", "revision")`; the revision is optional.

    Raises:
        HubError: not an hf:// address, or not a valid repo id.
    """
    if not uri.startswith(URI_SCHEME):
        raise HubError(f"'{uri}' is not a Hub address; write hf://org/name or hf://org/name@revision.")
    repo_id, sep, revision = uri.removeprefix(URI_SCHEME).partition("@")
    if sep and not revision:
        raise HubError(f"'{uri}' has an empty revision after '@'; write hf://{repo_id}@main or drop the '@'.")
    _check_repo_id(repo_id, uri)
    return repo_id, revision or None


def copy_snapshot(snapshot: Snapshot, dest: str | Path) -> Path:
    """Copy a snapshot's files (real files, not cache links) into a new folder that zoo.load reads.

    The folder appears complete or not at all. Raises HubError if `dest` exists and is not empty.
    """
    dest = check_copy_target(dest, snapshot.repo_id)
    files = [*snapshot.files, *([CARD_FILE] if (snapshot.folder / CARD_FILE).is_file() else [])]
    with fsio.atomic_dir(dest) as tmp:
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(snapshot.folder / name, tmp / name)  # follows the cache's link to the blob
    return dest


def check_copy_target(dest: str | Path, repo_id: str) -> Path:
    """`dest` as a Path if a pull may copy files there: it is absent or an empty folder; else HubError."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise HubError(f"cannot copy {repo_id} into {dest}: it exists and is not empty. Name a new folder.")
    return dest


def _split_revision(repo_id: str, revision: str | None) -> tuple[str, str]:
    """`org/name@rev` → (`org/name`, `rev`); `revision=` must not contradict it."""
    if repo_id.startswith(URI_SCHEME):
        repo_id, in_id = parse_uri(repo_id)
    else:
        repo_id, _, rest = repo_id.partition("@")
        in_id = rest or None
        _check_repo_id(repo_id)
    if in_id and revision and in_id != revision:
        said = f"two revisions for {repo_id}: '@{in_id}' in the id and"
        raise HubError(f"{said} revision='{revision}'; give one.", cli=f"{said} --revision {revision}; give one.")
    return repo_id, in_id or revision or constants.DEFAULT_REVISION


def _check_repo_id(repo_id: str, written: str | None = None) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"'{written or repo_id}' is not a Hub repo id; write it as org/name. ({err})") from err
    if "/" not in repo_id:
        raise HubError(f"'{written or repo_id}' has no namespace; write it as org/name.")


def _endpoint(endpoint: str | None) -> str:
    return (endpoint or constants.ENDPOINT).rstrip("/")


# ------------------------------------------------------------------------------------ errors


@contextmanager
def _hub_errors(action: str, repo_id: str, revision: str | None, endpoint: str, api: HfApi) -> Iterator[None]:
    """Turn the client's exceptions into HubErrors that say what failed, what exists and what to do."""
    try:
        yield
    except ZooError:  # zoo's own errors (some are ValueErrors too) already say what went wrong
        raise
    except (HfHubHTTPError, EntryNotFoundError, OfflineModeIsEnabled, httpx2.TransportError) as err:
        raise _hub_error(err, f"cannot {action}", repo_id, revision, endpoint, api) from err
    except ValueError as err:  # the client refuses what a repo says (a file name that leaves the cache)
        raise HubError(f"cannot {action}: {endpoint} sent what the Hub client refuses: {_first_line(err)}") from err
    except OSError as err:  # the cache folder cannot be written, or a body that does not match its stated size
        raise HubError(f"cannot {action}: {err}") from err


def _hub_error(err: Exception, at: str, repo_id: str, revision: str | None, endpoint: str, api: HfApi) -> HubError:
    if isinstance(err, LocalEntryNotFoundError) and isinstance(err.__cause__, Exception):
        # The client's wrapper when a HEAD request failed and nothing was cached: the cause says why.
        return _hub_error(err.__cause__, at, repo_id, revision, endpoint, api)
    if isinstance(err, RepositoryNotFoundError):
        said = (
            f"{at}: repository '{repo_id}' not found at {endpoint}. If it is private or gated, log in (`hf auth login`)"
        )
        return HubError(f"{said} or pass token=.", cli=f"{said} or set HF_TOKEN.")
    if isinstance(err, RevisionNotFoundError):
        return HubError(f"{at}: {_revision_hint(api, repo_id, revision)}")
    if isinstance(err, EntryNotFoundError):
        return HubError(f"{at}: the repo lists a file that {endpoint} does not serve: {_first_line(err)}")
    if isinstance(err, OfflineModeIsEnabled):
        return HubError(
            f"{at}: HF_HUB_OFFLINE is set; unset it, or pull with local_files_only=True.",
            cli=f"{at}: HF_HUB_OFFLINE is set; unset it, or pass --offline to use the cache alone.",
        )
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "?"
        return HubError(f"{at}: {endpoint} answered HTTP {status}: {_first_line(err)}")
    pulling = not at.startswith("cannot push")  # the cache can stand in for the server only when reading
    offline_hint = " To use only what is cached, set HF_HUB_OFFLINE=1." if pulling else ""
    return HubError(
        f"{at}: the connection to {endpoint} failed ({type(err).__name__}: {err}). Run again to retry.{offline_hint}"
    )


def _revision_hint(api: HfApi, repo_id: str, revision: str | None) -> str:
    """Which branches and tags exist, with the nearest one, for a revision that does not."""
    asked = f"no revision '{revision}' in {repo_id}." if revision else f"no such revision in {repo_id}."
    try:
        refs = api.list_repo_refs(repo_id)
    except (HfHubHTTPError, httpx2.TransportError):  # the hint is a courtesy; the error stands without it
        return asked
    names = [ref.name for ref in (*refs.branches, *refs.tags)]
    nearest = did_you_mean(revision, names) if revision else ""
    return f"{asked}{nearest} Branches and tags: {listing(names)}; or pass a full commit id."


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
