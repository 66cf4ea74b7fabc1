"""Tests of the in-memory Hub server against the real huggingface_hub client."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
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


pytestmark = pytest.mark.usefixtures("hub_client_settings")  # every test here, with a server or not


@pytest.fixture(autouse=True)
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The download retry sleeps 1 s before resuming; skip it to keep tests fast."""
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda seconds: None))


@pytest.fixture
def api(server: HubServer) -> HfApi:
    return HfApi(endpoint=server.url, token="test-token")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "upload"
    for path, data in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def download(server: HubServer, cache: Path, filename: str, **kwargs: object) -> Path:
    return Path(hf_hub_download(REPO, filename, cache_dir=cache, endpoint=server.url, token="test-token", **kwargs))


def test_create_repo_twice_with_exist_ok(server: HubServer, api: HfApi) -> None:
    first = api.create_repo(REPO, exist_ok=True)
    second = api.create_repo(REPO, exist_ok=True)
    assert first == second == f"{server.url}/{REPO}"
    assert first.repo_id == REPO
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert api.whoami()["name"] == "test-user"


def test_upload_folder_then_only_changed_file(server: HubServer, api: HfApi, folder: Path) -> None:
    api.create_repo(REPO, exist_ok=True)
    server.clear_requests()
    first = api.upload_folder(repo_id=REPO, folder_path=folder)
    assert [m for m, _ in server.requests] == ["POST"] * 3
    assert [p for _, p in server.requests] == [
        "/api/validate-yaml",
        f"/api/models/{REPO}/preupload/main",
        f"/api/models/{REPO}/commit/main",
    ]
    assert sorted(server.last_commit_files) == sorted(FILES)
    assert first.oid == server.resolve(REPO)
    for path, data in FILES.items():
        assert server.get_file(REPO, path) == data

    (folder / "config.json").write_bytes(b'{"hidden": 8}')
    second = api.upload_folder(repo_id=REPO, folder_path=folder)
    assert server.last_commit_files == ["config.json"]
    assert server.get_file(REPO, "config.json") == b'{"hidden": 8}'
    assert second.oid != first.oid

    # Nothing changed: the client sends no commit at all and reports the current head.
    commits_before = len(server.commit_requests)
    third = api.upload_folder(repo_id=REPO, folder_path=folder)
    assert len(server.commit_requests) == commits_before
    assert third.oid == second.oid


def test_commit_deletions_and_parent_check(server: HubServer, api: HfApi) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    head = server.put_files(REPO, FILES)
    api.create_commit(
        REPO,
        operations=[CommitOperationDelete("weights/"), CommitOperationAdd("a/b.txt", b"new")],
        commit_message="prune",
        parent_commit=head,
    )
    assert server.commit_requests[-1] == [("deletedFolder", "weights/"), ("file", "a/b.txt")]
    assert sorted(api.list_repo_files(REPO)) == ["README.md", "a/b.txt", "config.json"]
    with pytest.raises(HfHubHTTPError) as err:  # stale parent commit
        api.create_commit(REPO, operations=[CommitOperationAdd("c.txt", b"x")], commit_message="m", parent_commit=head)
    assert err.value.response.status_code == 412


def test_snapshot_download_gives_identical_bytes(server: HubServer, api: HfApi, folder: Path, tmp_path: Path) -> None:
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=folder)
    snapshot = Path(snapshot_download(REPO, cache_dir=tmp_path / "cache", endpoint=server.url, token="test-token"))
    assert snapshot.name == server.resolve(REPO)
    downloaded = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    assert downloaded == FILES


def test_download_pinned_to_tag_and_commit(server: HubServer, tmp_path: Path) -> None:
    old = server.put_files(REPO, {"config.json": b"v1"}, message="v1")
    server.create_tag(REPO, "v1.0", old)
    new = server.put_files(REPO, {"config.json": b"v2"}, message="v2")
    cache = tmp_path / "cache"

    assert download(server, cache, "config.json", revision="v1.0").read_bytes() == b"v1"
    assert (cache / "models--org--tiny" / "refs" / "v1.0").read_text() == old
    assert download(server, cache, "config.json").read_bytes() == b"v2"
    assert download(server, cache, "config.json", revision=old).read_bytes() == b"v1"

    server.clear_requests()  # a full commit id already cached needs no request at all
    assert download(server, cache, "config.json", revision=new).read_bytes() == b"v2"
    assert server.requests == []


def test_revision_with_slash_is_percent_encoded(server: HubServer, api: HfApi, tmp_path: Path) -> None:
    server.put_files(REPO, {"config.json": b"main"})
    api.create_branch(REPO, branch="feature/x")
    api.upload_file(path_or_fileobj=b"feature", path_in_repo="config.json", repo_id=REPO, revision="feature/x")
    assert download(server, tmp_path, "config.json", revision="feature/x").read_bytes() == b"feature"
    assert ("HEAD", f"/{REPO}/resolve/feature/x/config.json") in server.requests
    refs = api.list_repo_refs(REPO)
    assert sorted(b.name for b in refs.branches) == ["feature/x", "main"]


def test_truncated_download_is_resumed(server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client resumes from what it has written, i.e. whole 10 MiB chunks: make chunks small.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 512)
    server.put_files(REPO, FILES)
    server.fail_next_download("model.bin", after_bytes=1000)
    path = download(server, tmp_path, "weights/model.bin")
    assert path.read_bytes() == FILES["weights/model.bin"]
    gets = [p for m, p in server.requests if m == "GET" and p.endswith("model.bin")]
    assert len(gets) == 2  # the cut one, then a Range request for the rest
    assert server.range_requests == [("weights/model.bin", "bytes=512-")]


def test_failed_download_leaves_no_corrupt_file(server: HubServer, tmp_path: Path) -> None:
    server.put_files(REPO, FILES)
    for _ in range(6):  # more cuts (with no progress) than the client's 5 retries
        server.fail_next_download("model.bin", after_bytes=0)
    with pytest.raises(httpx2.TransportError):
        download(server, tmp_path, "weights/model.bin")
    storage = tmp_path / "models--org--tiny"
    for path in storage.rglob("*"):
        assert not path.name.endswith(".incomplete")
        if path.is_file() and path.parent.name == "blobs":
            assert path.read_bytes() in FILES.values()
    # The server is healthy again: a new call downloads the right bytes.
    assert download(server, tmp_path, "weights/model.bin").read_bytes() == FILES["weights/model.bin"]


def test_errors_map_to_client_exceptions(server: HubServer, api: HfApi, tmp_path: Path) -> None:
    server.put_files(REPO, FILES)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", cache_dir=tmp_path, endpoint=server.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(EntryNotFoundError):
        download(server, tmp_path, "nope.json")
    with pytest.raises(RevisionNotFoundError):
        download(server, tmp_path, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="no-such-branch", cache_dir=tmp_path, endpoint=server.url)


def test_model_info_tree_and_paging(server: HubServer, api: HfApi) -> None:
    head = server.put_files(REPO, FILES)
    info = api.model_info(REPO)
    assert info.sha == head
    assert sorted(s.rfilename for s in info.siblings) == sorted(FILES)
    assert api.model_info(REPO, revision=head).sha == head

    server.tree_page_size = 2
    server.clear_requests()
    tree = list(api.list_repo_tree(REPO, recursive=True, expand=True))
    assert [(e.path, type(e).__name__) for e in tree] == [
        ("README.md", "RepoFile"),
        ("config.json", "RepoFile"),
        ("weights", "RepoFolder"),
        ("weights/model.bin", "RepoFile"),
    ]
    assert len(server.requests) == 2  # two pages followed through `Link: rel="next"`
    assert tree[1].blob_id == git_blob_sha1(FILES["config.json"])
    assert tree[1].last_commit.oid == head
    top = [e.path for e in api.list_repo_tree(REPO)]
    assert top == ["README.md", "config.json", "weights"]
    assert [e.path for e in api.list_repo_tree(REPO, path_in_repo="weights")] == ["weights/model.bin"]


def test_tags_branches_and_dataset_repos(server: HubServer, api: HfApi, tmp_path: Path) -> None:
    head = server.put_files(REPO, FILES)
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

    server.put_files("org/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
    path = hf_hub_download("org/data", "train.csv", repo_type="dataset", cache_dir=tmp_path, endpoint=server.url)
    assert Path(path).read_bytes() == b"a,b\n1,2\n"


def test_resolve_headers_and_ranges(server: HubServer) -> None:
    head = server.put_files(REPO, FILES)
    data = FILES["weights/model.bin"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
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
