"""In-memory, Hub-compatible HTTP server for tests and benchmarks.

The real ``huggingface_hub`` client can create repos, upload folders (every file is answered as a
"regular" git blob, so neither Xet nor LFS is involved), list trees, resolve and download files
(HEAD, GET, Range), and manage tags and branches against it.

Usage::

    with HubServer() as hub:
        api = HfApi(endpoint=hub.url, token="test-token")
        ...

Standalone: ``python tests/hubserver.py --port 0`` prints the URL and serves until Ctrl-C.

Standard library only. It binds 127.0.0.1 only; nothing is authenticated.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import socket
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

USER = "test-user"
HOST = "127.0.0.1"
# URL segment after /api/ -> repo type, and repo type -> URL prefix of its web pages.
API_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (``git hash-object``), which the client compares to skip uploads."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    """The current time in the one format ``huggingface_hub.utils.parse_datetime`` reads."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An HTTP error answer; ``code`` goes to ``X-Error-Code``, which the client maps to exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


# ----------------------------------------------------------------------------------------- store


@dataclass(frozen=True)
class Commit:
    """One commit: a full snapshot of the repo's files."""

    oid: str
    parent: str | None
    files: Mapping[str, bytes]
    title: str
    message: str
    date: str


@dataclass
class Repo:
    """A repository: its commits by id, branches and tags (name -> commit id)."""

    repo_type: str
    repo_id: str
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """Commit of a branch, tag (plain or ``refs/heads/``/``refs/tags/``) or full commit id."""
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = self.branches.get(name) or self.tags.get(name) or (revision if revision in self.commits else None)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def branch_name(self, revision: str) -> str:
        """The branch a commit must go to; tags and commit ids are refused like the Hub does."""
        name = revision.removeprefix("refs/heads/")
        if name not in self.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return name


class HubStore:
    """Thread-safe in-memory repositories. Every public method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self._counter = 0  # makes commit ids unique even for identical snapshots

    def get(self, repo_type: str, repo_id: str) -> Repo:
        """The repo, or a ``RepoNotFound`` error."""
        with self.lock:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def create(self, repo_type: str, repo_id: str) -> bool:
        """Create a repo whose ``main`` holds one empty commit; False if it already existed."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False
            repo = Repo(repo_type=repo_type, repo_id=repo_id, created_at=_now())
            self.repos[(repo_type, repo_id)] = repo
            first = self._new_commit(repo, None, {}, "initial commit", "")
            repo.branches["main"] = first.oid
            return True

    def delete(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            self.get(repo_type, repo_id)
            del self.repos[(repo_type, repo_id)]

    def commit(
        self,
        repo: Repo,
        branch: str,
        changes: Mapping[str, bytes | None],
        deleted_folders: Iterable[str] = (),
        title: str = "",
        message: str = "",
        parent_commit: str | None = None,
    ) -> Commit:
        """Apply file changes (``None`` deletes) and folder deletions on top of ``branch``'s head."""
        with self.lock:
            name = repo.branch_name(branch)
            head = repo.commits[repo.branches[name]]
            if parent_commit is not None and parent_commit != head.oid:
                raise HubError(412, f"Parent commit {parent_commit} is not the head of {name} ({head.oid})")
            files = dict(head.files)
            for folder in deleted_folders:
                prefix = folder.strip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            for path, data in changes.items():
                if data is not None:
                    files[path] = data
                elif files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            new = self._new_commit(repo, head.oid, files, title, message)
            repo.branches[name] = new.oid
            return new

    def _new_commit(self, repo: Repo, parent: str | None, files: dict[str, bytes], title: str, message: str) -> Commit:
        self._counter += 1
        digest = hashlib.sha1(f"{repo.repo_id}\n{parent}\n{self._counter}\n{title}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_sha1(files[path])}\n".encode())
        new = Commit(digest.hexdigest(), parent, MappingProxyType(files), title, message, _now())
        repo.commits[new.oid] = new
        return new

    def last_commit_touching(self, repo: Repo, head: Commit, path: str) -> Commit:
        """The newest commit, from ``head`` back, that changed the file or folder ``path``."""
        with self.lock:
            current = head
            while current.parent is not None:
                parent = repo.commits[current.parent]
                if _path_state(parent.files, path) != _path_state(current.files, path):
                    return current
                current = parent
            return current


def _path_state(files: Mapping[str, bytes], path: str) -> tuple[tuple[str, str], ...]:
    """What ``path`` (file or folder) holds, so two snapshots can be compared at that path."""
    prefix = path + "/"
    return tuple(sorted((p, git_blob_sha1(d)) for p, d in files.items() if p == path or p.startswith(prefix)))


def _tree_entries(files: Mapping[str, bytes], path: str, recursive: bool) -> list[dict[str, Any]] | None:
    """Tree listing of folder ``path`` (files and folders, sorted by path); None if no such folder."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    folders: set[str] = set()
    entries: list[dict[str, Any]] = []
    for file_path in sorted(files):
        if not file_path.startswith(prefix):
            continue
        parts = file_path[len(prefix) :].split("/")
        depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
        folders.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
        if recursive or len(parts) == 1:
            data = files[file_path]
            entries.append({"type": "file", "path": file_path, "size": len(data), "oid": git_blob_sha1(data)})
    if prefix and not entries and not folders:
        return None
    for folder in folders:
        tree_id = hashlib.sha1(repr(_path_state(files, folder)).encode()).hexdigest()
        entries.append({"type": "directory", "path": folder, "size": 0, "oid": tree_id})
    return sorted(entries, key=lambda entry: entry["path"])


# ------------------------------------------------------------------------------------------- http


@dataclass
class Response:
    """An answer to write; ``drop_after`` closes the socket after that many body bytes."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass
class Request:
    """A parsed request: path split on raw ``/`` and each segment unquoted (revisions may hold ``%2F``)."""

    method: str
    raw_path: str
    segments: list[str]
    query: dict[str, list[str]]
    headers: Message  # case-insensitive, like the client sends them
    body: bytes

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[0]

    def flag(self, name: str) -> bool:
        return self.param(name).lower() in ("1", "true")

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


class _Handler(BaseHTTPRequestHandler):
    """Reads each request whole and writes every answer with a Content-Length (keep-alive)."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end instead of holding a thread forever
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.hub._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; hub.requests records
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self, method: str) -> None:
        hub = self.server.hub
        raw_path, _, query = self.path.partition("?")
        hub._record(method, unquote(raw_path))
        request = Request(
            method=method,
            raw_path=raw_path,
            segments=[unquote(s) for s in raw_path.split("/")[1:]],
            query=parse_qs(query, keep_blank_values=True),
            headers=self.headers,
            body=self._read_body(),
        )
        try:
            response = hub._dispatch(request)
        except HubError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            response = _json(err.status, {"error": err.message}, headers)
        except Exception:  # a server bug: answer 500 and keep it for the test to report
            hub.errors.append(traceback.format_exc())
            response = _json(500, {"error": "internal test-server error"})
        self._write(method, response)

    def _write(self, method: str, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if method == "HEAD":
            return
        if response.drop_after is None:
            self.wfile.write(response.body)
            return
        # Simulated network failure: part of the body, then a closed socket.
        self.wfile.write(response.body[: response.drop_after])
        self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


# ------------------------------------------------------------------------------------------ server


class HubServer:
    """A Hub-compatible server on 127.0.0.1 (ephemeral port by default), in a daemon thread.

    Test hooks: ``requests`` (every ``(method, unquoted path)`` seen), ``commit_requests`` (the
    ``(key, path)`` operations of every commit POST), ``last_commit_files``, ``range_requests``,
    ``errors`` (server tracebacks), ``fail_next_download``, ``misreport_size``, and direct seeding with
    ``put_files``/``create_tag``/``create_branch``.
    """

    def __init__(self, port: int = 0, tree_page_size: int = 1000) -> None:
        self.store = HubStore()
        self.tree_page_size = tree_page_size  # entries per tree page before a `Link: rel="next"`
        self.errors: list[str] = []
        self.commit_requests: list[list[tuple[str, str]]] = []
        self.range_requests: list[tuple[str, str]] = []  # (file path, Range header) of resolve calls
        self._requests: list[tuple[str, str]] = []
        self._failures: list[tuple[str, int]] = []
        self._listed_sizes: dict[str, int] = {}  # path -> size the repo listing claims (a lying server)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> HubServer:
        """Bind 127.0.0.1 and serve in a daemon thread."""
        httpd = self._httpd = _Server((HOST, self._port), _Handler)
        httpd.hub = self
        # A short poll interval makes stop() quick (shutdown waits for the next poll).
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="hubserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close kept-alive connections so no client waits on a dead server."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("HubServer is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Endpoint to give the client, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    # test hooks

    @property
    def requests(self) -> list[tuple[str, str]]:
        """A copy of every ``(method, path)`` seen so far; paths are unquoted, without query."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def last_commit_files(self) -> list[str]:
        """Paths sent as ``file`` lines in the latest commit POST (what the client really uploaded)."""
        return [path for key, path in (self.commit_requests or [[]])[-1] if key == "file"]

    def fail_next_download(self, path_suffix: str, after_bytes: int = 0) -> None:
        """Make the next GET of a file ending with ``path_suffix`` drop the connection mid-body."""
        with self._lock:
            self._failures.append((path_suffix, after_bytes))

    def misreport_size(self, path: str, size: int) -> None:
        """Make repo listings (model_info) claim ``size`` bytes for ``path``; downloads still send the real bytes."""
        with self._lock:
            self._listed_sizes[path] = size

    # seeding

    def create_repo(self, repo_id: str, repo_type: str = "model") -> bool:
        """Create a repo (no-op if it exists); True if it was created."""
        return self.store.create(repo_type, repo_id)

    def put_files(
        self,
        repo_id: str,
        files: Mapping[str, bytes | None],
        branch: str = "main",
        message: str = "Seed files",
        repo_type: str = "model",
    ) -> str:
        """Commit ``files`` (``None`` deletes) on ``branch``, creating the repo if needed; the commit id."""
        self.store.create(repo_type, repo_id)
        repo = self.store.get(repo_type, repo_id)
        return self.store.commit(repo, branch, files, title=message).oid

    def create_tag(self, repo_id: str, tag: str, revision: str = "main", repo_type: str = "model") -> str:
        """Point ``tag`` at ``revision``; the tagged commit id."""
        repo = self.store.get(repo_type, repo_id)
        with self.store.lock:
            repo.tags[tag] = repo.resolve(revision).oid
            return repo.tags[tag]

    def create_branch(self, repo_id: str, branch: str, revision: str = "main", repo_type: str = "model") -> str:
        """Create or move ``branch`` to ``revision``; the commit id."""
        repo = self.store.get(repo_type, repo_id)
        with self.store.lock:
            repo.branches[branch] = repo.resolve(revision).oid
            return repo.branches[branch]

    def resolve(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit id ``revision`` points at."""
        return self.store.get(repo_type, repo_id).resolve(revision).oid

    def get_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        """Stored bytes of ``path`` at ``revision`` (KeyError if absent)."""
        return self.store.get(repo_type, repo_id).resolve(revision).files[path]

    # internals used by the handler

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _take_failure(self, path: str) -> int | None:
        with self._lock:
            for i, (suffix, after_bytes) in enumerate(self._failures):
                if path.endswith(suffix):
                    del self._failures[i]
                    return after_bytes
        return None

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def _dispatch(self, req: Request) -> Response:
        """Route a request to the matching ``_api_*``/``_resolve`` method."""
        seg, method = req.segments, req.method
        if seg[:1] == ["api"]:
            route = (method, "/".join(seg[1:]))
            if route == ("GET", "whoami-v2"):
                return self._api_whoami(req)
            if route == ("POST", "repos/create"):
                return self._api_create_repo(req)
            if route == ("DELETE", "repos/delete"):
                return self._api_delete_repo(req)
            if route == ("POST", "validate-yaml"):
                return _json(200, {"errors": [], "warnings": []})
            if len(seg) >= 4 and seg[1] in API_REPO_TYPES:
                repo = self.store.get(API_REPO_TYPES[seg[1]], f"{seg[2]}/{seg[3]}")
                return self._api_repo(req, repo, seg[4] if len(seg) > 4 else "", seg[5:])
        else:
            # /{prefix}{ns}/{name}/resolve/{rev}/{path...}
            offset = 1 if seg[:1] in (["datasets"], ["spaces"], ["kernels"]) else 0
            if method in ("GET", "HEAD") and len(seg) >= offset + 5 and seg[offset + 2] == "resolve":
                repo_type = API_REPO_TYPES[seg[0]] if offset else "model"
                repo = self.store.get(repo_type, f"{seg[offset]}/{seg[offset + 1]}")
                return self._resolve(req, repo, seg[offset + 3], "/".join(seg[offset + 4 :]))
        raise HubError(404, f"No route for {method} {req.raw_path}")

    def _api_repo(self, req: Request, repo: Repo, action: str, rest: list[str]) -> Response:
        """Routes under ``/api/{type}s/{ns}/{name}``; a single revision may hold ``/``."""
        rev = "/".join(rest)
        handlers = {
            ("GET", ""): lambda: self._api_info(repo, "main"),
            ("GET", "revision"): lambda: self._api_info(repo, rev),
            ("GET", "tree"): lambda: self._api_tree(req, repo, rest[0] if rest else "main", "/".join(rest[1:])),
            ("GET", "refs"): lambda: self._api_refs(repo),
            ("GET", "commits"): lambda: self._api_commits(repo, rev or "main"),
            ("POST", "paths-info"): lambda: self._api_paths_info(req, repo, rev),
            ("POST", "preupload"): lambda: self._api_preupload(req, repo, rev),
            ("POST", "commit"): lambda: self._api_commit(req, repo, rev),
            ("POST", "tag"): lambda: self._api_create_tag(req, repo, rev),
            ("DELETE", "tag"): lambda: self._api_delete_ref(repo.tags, rev),
            ("POST", "branch"): lambda: self._api_create_branch(req, repo, rev),
            ("DELETE", "branch"): lambda: self._api_delete_ref(repo.branches, rev),
        }
        handler = handlers.get((req.method, action))
        if handler is None:
            raise HubError(404, f"No route for {req.method} {req.raw_path}")
        return handler()

    # routes

    def _api_whoami(self, req: Request) -> Response:
        if not req.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")
        token = {"displayName": "test-token", "role": "write"}
        return _json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": USER,
                "fullname": "Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": token},
            },
        )

    def _repo_from_body(self, req: Request) -> tuple[str, str]:
        body = req.json()
        return body.get("type") or "model", f"{body.get('organization') or USER}/{body['name']}"

    def _api_create_repo(self, req: Request) -> Response:
        repo_type, repo_id = self._repo_from_body(req)
        url = f"{self.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        if not self.store.create(repo_type, repo_id):
            # The client's exist_ok reads the 409 itself; the body carries the url like the Hub's.
            return _json(409, {"error": "You already created this repo", "url": url})
        return _json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _api_delete_repo(self, req: Request) -> Response:
        self.store.delete(*self._repo_from_body(req))
        return _json(200, {})

    def _api_info(self, repo: Repo, revision: str) -> Response:
        commit = repo.resolve(revision)
        files = sorted(commit.files.items())
        sizes = {p: self._listed_sizes.get(p, len(d)) for p, d in files}
        siblings = [{"rfilename": p, "size": sizes[p], "blobId": git_blob_sha1(d)} for p, d in files]
        return _json(200, {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
            "createdAt": repo.created_at, "private": False, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        })  # fmt: skip

    def _api_tree(self, req: Request, repo: Repo, revision: str, path: str) -> Response:
        commit = repo.resolve(revision)
        entries = _tree_entries(commit.files, path, req.flag("recursive"))
        if entries is None:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        if req.flag("expand"):
            for entry in entries:
                last = self.store.last_commit_touching(repo, commit, entry["path"])
                entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        start = int(req.param("cursor", "0"))
        end = start + self.tree_page_size
        headers = {}
        if end < len(entries):
            query = {k: v[0] for k, v in req.query.items()} | {"cursor": str(end)}
            headers["Link"] = f'<{self.url}{req.raw_path}?{urlencode(query)}>; rel="next"'
        return _json(200, entries[start:end], headers)

    def _api_paths_info(self, req: Request, repo: Repo, revision: str) -> Response:
        commit = repo.resolve(revision)
        form = parse_qs(req.body.decode(), keep_blank_values=True)
        wanted = {p.strip("/") for p in form.get("paths", [])}
        entries = _tree_entries(commit.files, "", recursive=True) or []
        return _json(200, [entry for entry in entries if entry["path"] in wanted])

    def _api_refs(self, repo: Repo) -> Response:
        def refs(names: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in sorted(names.items())]

        with self.store.lock:
            body = {"branches": refs(repo.branches, "heads"), "tags": refs(repo.tags, "tags"),
                    "converts": [], "pullRequests": []}  # fmt: skip
        return _json(200, body)

    def _api_commits(self, repo: Repo, revision: str) -> Response:
        history, commit = [], repo.resolve(revision)
        while True:
            history.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                            "authors": [{"user": USER}], "date": commit.date})  # fmt: skip
            if commit.parent is None:
                return _json(200, history)
            commit = repo.commits[commit.parent]

    def _api_preupload(self, req: Request, repo: Repo, revision: str) -> Response:
        files = repo.resolve(revision).files
        # Everything is "regular" (no Xet/LFS); the current blob id lets the client skip unchanged files.
        answer = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None}
            for f in req.json().get("files", [])
        ]  # fmt: skip
        return _json(200, {"files": answer})

    def _api_commit(self, req: Request, repo: Repo, revision: str) -> Response:
        if req.flag("create_pr"):
            raise HubError(400, "This test server does not support pull requests")
        header: dict[str, Any] = {}
        changes: dict[str, bytes | None] = {}
        folders: list[str] = []
        ops: list[tuple[str, str]] = []
        for line in req.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
                continue
            ops.append((key, value["path"]))
            if key == "file":
                content = value["content"]
                raw = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                changes[value["path"]] = raw
            elif key == "deletedFile":
                changes[value["path"]] = None
            elif key == "deletedFolder":
                folders.append(value["path"])
            else:  # lfsFile: never asked for, since preupload answers "regular"
                raise HubError(400, f"Unsupported commit operation {key!r} (test server stores regular files only)")
        self.commit_requests.append(ops)
        commit = self.store.commit(
            repo, revision, changes, folders, title=header.get("summary", ""),
            message=header.get("description", ""), parent_commit=header.get("parentCommit"),
        )  # fmt: skip
        url = f"{self._repo_url(repo)}/commit/{commit.oid}"
        return _json(200, {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def _api_create_tag(self, req: Request, repo: Repo, revision: str) -> Response:
        tag = req.json()["tag"]
        with self.store.lock:
            oid = repo.resolve(revision).oid
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = oid
        return _json(200, {})

    def _api_create_branch(self, req: Request, repo: Repo, branch: str) -> Response:
        start = req.json().get("startingPoint") or "main"
        with self.store.lock:
            oid = repo.resolve(start).oid
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            repo.branches[branch] = oid
        return _json(200, {})

    def _api_delete_ref(self, refs: dict[str, str], name: str) -> Response:
        with self.store.lock:
            if refs.pop(name, None) is None:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
        return _json(200, {})

    def _resolve(self, req: Request, repo: Repo, revision: str, path: str) -> Response:
        """``/resolve/``: the file's bytes with the headers ``hf_hub_download`` checks; Range aware."""
        commit = repo.resolve(revision)
        headers = {"X-Repo-Commit": commit.oid}
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        data = commit.files[path]
        headers |= {"ETag": f'"{git_blob_sha1(data)}"', "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream"}  # fmt: skip
        status, body = 200, data
        if "Range" in req.headers:
            self.range_requests.append((path, req.headers["Range"]))
            span = _parse_range(req.headers["Range"], len(data))
            if span is None:
                return Response(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
            start, end = span
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        drop_after = self._take_failure(path) if req.method == "GET" else None
        return Response(status, body, headers, drop_after)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive ``(start, end)`` of a single ``bytes=`` range, or None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    first, _, last = spec.split(",")[0].strip().partition("-")
    if unit.strip() != "bytes" or not (first or last):
        return None
    if not first:  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else None


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted, printing the URL first."""
    parser = argparse.ArgumentParser(description="In-memory Hub-compatible test server (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    hub = HubServer(port=args.port).start()
    print(hub.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


if __name__ == "__main__":
    main()
