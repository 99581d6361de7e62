"""A stand-in for the Hugging Face hub on 127.0.0.1, speaking the few endpoints huggingface-hub calls.

So the real download code runs without network. Endpoints (as huggingface_hub 2.x calls them):
  GET  /api/models/{repo}[/revision/{rev}]   -> {"id", "sha", "siblings": [{"rfilename"}]}   (model_info)
  GET  /api/models/{repo}/tree/{rev}          -> [{"type": "file", "path", "size", "oid"}]   (list_repo_tree)
  HEAD /{repo}/resolve/{rev}/{file}           -> X-Repo-Commit, ETag, Content-Length       (get_hf_file_metadata)
  GET  /{repo}/resolve/{rev}/{file}           -> the bytes                                 (http_get)
Errors carry the X-Error-Code header huggingface-hub maps to its exception types.
Every request is recorded in `served` so that a test can check which files were fetched.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    sha: str = field(default_factory=lambda: os.urandom(20).hex())


class HubStandIn:
    def __init__(self, repos: dict[str, FakeRepo]):
        self.repos = repos
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def served(self, repo_id: str) -> set[str]:
        """The files of `repo_id` whose bytes were sent (GET on resolve)."""
        prefix = f"/{repo_id}/resolve/"
        return {p[len(prefix) :].split("/", 1)[1] for m, p in self.requests if m == "GET" and p.startswith(prefix)}


def _handler_for(hub: HubStandIn):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self._route(head=True)

        def do_GET(self):
            self._route(head=False)

        def _route(self, head: bool):
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(("HEAD" if head else "GET", path))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(f"{parts[2]}/{parts[3]}", parts[4:])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
            else:
                self._error(404, "RepoNotFound")

        def _repo(self, repo_id: str, rev: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound")
            elif rev not in ("main", repo.sha):
                self._error(404, "RevisionNotFound", repo)
            else:
                return repo
            return None

        def _api(self, repo_id: str, rest: list[str]):
            if rest[:1] == ["tree"]:
                repo = self._repo(repo_id, rest[1])
                body = [
                    {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for p, b in (repo.files.items() if repo else ())
                ]
            else:
                repo = self._repo(repo_id, rest[1] if rest[:1] == ["revision"] else "main")
                body = repo and {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo.sha,
                    "private": False,
                    "siblings": [{"rfilename": p} for p in repo.files],
                }
            if repo is not None:
                self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head=False)

        def _resolve(self, repo_id: str, rev: str, name: str, head: bool):
            repo = self._repo(repo_id, rev)
            if repo is None:
                return
            if name not in repo.files:
                self._error(404, "EntryNotFound", repo)
                return
            data = repo.files[name]
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            self._send(200, data, headers, head=head)

        def _error(self, status: int, code: str, repo: FakeRepo | None = None):
            headers = {"X-Error-Code": code, "Content-Type": "application/json"}
            if repo is not None:
                headers["X-Repo-Commit"] = repo.sha
            self._send(status, json.dumps({"error": code}).encode(), headers, head=self.command == "HEAD")

        def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool):
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler
