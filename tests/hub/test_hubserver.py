"""Tests of the in-memory Hub server against the real huggingface_hub client."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from huggingface_hub import HfApi, constants, file_download, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hubserver import HubServer, git_blob_sha1

REPO = "org/tiny"
FILES = {
    "README.md": b"---\nlicense: mit\n---\n# Tiny model\n",
    "config.json": b'{"hidden": 4}',
    "weights/model.bin": bytes(range(256)) * 40,  # 10 KiB of binary
}


@pytest.fixture(autouse=True)
def client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings the client froze at import: no telemetry (it calls huggingface.co), never offline."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # The download retry sleeps 1 s before resuming; skip it to keep tests fast.
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda seconds: None))


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server
        assert server.errors == [], "the test server raised:\n" + "\n".join(server.errors)


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.url, token="test-token")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "upload"
    for path, data in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def download(hub: HubServer, cache: Path, filename: str, **kwargs: object) -> Path:
    return Path(hf_hub_download(REPO, filename, cache_dir=cache, endpoint=hub.url, token="test-token", **kwargs))


def test_create_repo_twice_with_exist_ok(hub: HubServer, api: HfApi) -> None:
    first = api.create_repo(REPO, exist_ok=True)
    second = api.create_repo(REPO, exist_ok=True)
    assert first == second == f"{hub.url}/{REPO}"
    assert first.repo_id == REPO
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert api.whoami()["name"] == "test-user"


def test_upload_folder_then_only_changed_file(hub: HubServer, api: HfApi, folder: Path) -> None:
    api.create_repo(REPO, exist_ok=True)
    hub.clear_requests()
    first = api.upload_folder(repo_id=REPO, folder_path=folder)
    assert [m for m, _ in hub.requests] == ["POST"] * 3
    assert [p for _, p in hub.requests] == [
        "/api/validate-yaml",
        f"/api/models/{REPO}/preupload/main",
        f"/api/models/{REPO}/commit/main",
    ]
    assert sorted(hub.last_commit_files) == sorted(FILES)
    assert first.oid == hub.resolve(REPO)
    for path, data in FILES.items():
        assert hub.get_file(REPO, path) == data

    (folder / "config.json").write_bytes(b'{"hidden": 8}')
    second = api.upload_folder(repo_id=REPO, folder_path=folder)
    assert hub.last_commit_files == ["config.json"]
    assert hub.get_file(REPO, "config.json") == b'{"hidden": 8}'
    assert second.oid != first.oid

    # Nothing changed: the client sends no commit at all and reports the current head.
    commits_before = len(hub.commit_requests)
    third = api.upload_folder(repo_id=REPO, folder_path=folder)
    assert len(hub.commit_requests) == commits_before
    assert third.oid == second.oid


def test_commit_deletions_and_parent_check(hub: HubServer, api: HfApi) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    head = hub.put_files(REPO, FILES)
    api.create_commit(
        REPO,
        operations=[CommitOperationDelete("weights/"), CommitOperationAdd("a/b.txt", b"new")],
        commit_message="prune",
        parent_commit=head,
    )
    assert hub.commit_requests[-1] == [("deletedFolder", "weights/"), ("file", "a/b.txt")]
    assert sorted(api.list_repo_files(REPO)) == ["README.md", "a/b.txt", "config.json"]
    with pytest.raises(HfHubHTTPError) as err:  # stale parent commit
        api.create_commit(REPO, operations=[CommitOperationAdd("c.txt", b"x")], commit_message="m", parent_commit=head)
    assert err.value.response.status_code == 412


def test_snapshot_download_gives_identical_bytes(hub: HubServer, api: HfApi, folder: Path, tmp_path: Path) -> None:
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=folder)
    snapshot = Path(snapshot_download(REPO, cache_dir=tmp_path / "cache", endpoint=hub.url, token="test-token"))
    assert snapshot.name == hub.resolve(REPO)
    downloaded = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    assert downloaded == FILES


def test_download_pinned_to_tag_and_commit(hub: HubServer, tmp_path: Path) -> None:
    old = hub.put_files(REPO, {"config.json": b"v1"}, message="v1")
    hub.create_tag(REPO, "v1.0", old)
    new = hub.put_files(REPO, {"config.json": b"v2"}, message="v2")
    cache = tmp_path / "cache"

    assert download(hub, cache, "config.json", revision="v1.0").read_bytes() == b"v1"
    assert (cache / "models--org--tiny" / "refs" / "v1.0").read_text() == old
    assert download(hub, cache, "config.json").read_bytes() == b"v2"
    assert download(hub, cache, "config.json", revision=old).read_bytes() == b"v1"

    hub.clear_requests()  # a full commit id already cached needs no request at all
    assert download(hub, cache, "config.json", revision=new).read_bytes() == b"v2"
    assert hub.requests == []


def test_revision_with_slash_is_percent_encoded(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    hub.put_files(REPO, {"config.json": b"main"})
    api.create_branch(REPO, branch="feature/x")
    api.upload_file(path_or_fileobj=b"feature", path_in_repo="config.json", repo_id=REPO, revision="feature/x")
    assert download(hub, tmp_path, "config.json", revision="feature/x").read_bytes() == b"feature"
    assert ("HEAD", f"/{REPO}/resolve/feature/x/config.json") in hub.requests
    refs = api.list_repo_refs(REPO)
    assert sorted(b.name for b in refs.branches) == ["feature/x", "main"]


def test_truncated_download_is_resumed(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client resumes from what it has written, i.e. whole 10 MiB chunks: make chunks small.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 512)
    hub.put_files(REPO, FILES)
    hub.fail_next_download("model.bin", after_bytes=1000)
    path = download(hub, tmp_path, "weights/model.bin")
    assert path.read_bytes() == FILES["weights/model.bin"]
    gets = [p for m, p in hub.requests if m == "GET" and p.endswith("model.bin")]
    assert len(gets) == 2  # the cut one, then a Range request for the rest
    assert hub.range_requests == [("weights/model.bin", "bytes=512-")]


def test_failed_download_leaves_no_corrupt_file(hub: HubServer, tmp_path: Path) -> None:
    hub.put_files(REPO, FILES)
    for _ in range(6):  # more cuts (with no progress) than the client's 5 retries
        hub.fail_next_download("model.bin", after_bytes=0)
    with pytest.raises(httpx2.TransportError):
        download(hub, tmp_path, "weights/model.bin")
    storage = tmp_path / "models--org--tiny"
    for path in storage.rglob("*"):
        assert not path.name.endswith(".incomplete")
        if path.is_file() and path.parent.name == "blobs":
            assert path.read_bytes() in FILES.values()
    # The server is healthy again: a new call downloads the right bytes.
    assert download(hub, tmp_path, "weights/model.bin").read_bytes() == FILES["weights/model.bin"]


def test_errors_map_to_client_exceptions(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    hub.put_files(REPO, FILES)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(EntryNotFoundError):
        download(hub, tmp_path, "nope.json")
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="no-such-branch", cache_dir=tmp_path, endpoint=hub.url)


def test_model_info_tree_and_paging(hub: HubServer, api: HfApi) -> None:
    head = hub.put_files(REPO, FILES)
    info = api.model_info(REPO)
    assert info.sha == head
    assert sorted(s.rfilename for s in info.siblings) == sorted(FILES)
    assert api.model_info(REPO, revision=head).sha == head

    hub.tree_page_size = 2
    hub.clear_requests()
    tree = list(api.list_repo_tree(REPO, recursive=True, expand=True))
    assert [(e.path, type(e).__name__) for e in tree] == [
        ("README.md", "RepoFile"),
        ("config.json", "RepoFile"),
        ("weights", "RepoFolder"),
        ("weights/model.bin", "RepoFile"),
    ]
    assert len(hub.requests) == 2  # two pages followed through `Link: rel="next"`
    assert tree[1].blob_id == git_blob_sha1(FILES["config.json"])
    assert tree[1].last_commit.oid == head
    top = [e.path for e in api.list_repo_tree(REPO)]
    assert top == ["README.md", "config.json", "weights"]
    assert [e.path for e in api.list_repo_tree(REPO, path_in_repo="weights")] == ["weights/model.bin"]


def test_tags_branches_and_dataset_repos(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    head = hub.put_files(REPO, FILES)
    api.create_tag(REPO, tag="v1", revision=head)
    with pytest.raises(HfHubHTTPError):
        api.create_tag(REPO, tag="v1")
    api.create_tag(REPO, tag="v1", exist_ok=True)
    api.create_branch(REPO, branch="dev", revision="v1")
    refs = api.list_repo_refs(REPO)
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", head)]
    assert {b.name: b.target_commit for b in refs.branches} == {"main": head, "dev": head}
    api.delete_tag(REPO, tag="v1")
    assert api.list_repo_refs(REPO).tags == []

    hub.put_files("org/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
    path = hf_hub_download("org/data", "train.csv", repo_type="dataset", cache_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_bytes() == b"a,b\n1,2\n"


def test_resolve_headers_and_ranges(hub: HubServer) -> None:
    head = hub.put_files(REPO, FILES)
    data = FILES["weights/model.bin"]
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=5)
    url = f"/{REPO}/resolve/main/weights/model.bin"

    conn.request("HEAD", url)
    resp = conn.getresponse()
    resp.read()
    assert (resp.status, resp.headers["X-Repo-Commit"]) == (200, head)
    assert resp.headers["ETag"] == f'"{git_blob_sha1(data)}"'
    assert int(resp.headers["Content-Length"]) == len(data)

    conn.request("GET", url, headers={"Range": "bytes=100-"})  # same keep-alive connection
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (206, data[100:])
    assert resp.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"

    conn.request("GET", url, headers={"Range": f"bytes={len(data)}-"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 416

    conn.request("GET", f"/{REPO}/resolve/main/missing.txt")
    resp = conn.getresponse()
    assert json.loads(resp.read())["error"]
    assert (resp.status, resp.headers["X-Error-Code"], resp.headers["X-Repo-Commit"]) == (404, "EntryNotFound", head)
    conn.close()


def test_standalone_main_prints_url() -> None:
    script = Path(__file__).parents[1] / "hubserver.py"
    with subprocess.Popen([sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True) as proc:
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
            conn.request("GET", "/api/models/org/missing")
            resp = conn.getresponse()
            assert (resp.status, resp.headers["X-Error-Code"]) == (404, "RepoNotFound")
            conn.close()
        finally:
            proc.terminate()
