"""A bare asyncio Kubernetes client (aiohttp): the benchmark's baseline and its observer."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml


class AsyncKube:
    def __init__(self, kubeconfig: Path, limit: int = 64) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.base = cluster["server"]
        self.headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}"}
        with tempfile.NamedTemporaryFile("w", suffix=".crt", delete=False) as ca:
            ca.write(base64.b64decode(cluster["certificate-authority-data"]).decode())
        context = ssl.create_default_context(cafile=ca.name)
        self.session = aiohttp.ClientSession(
            headers=self.headers, connector=aiohttp.TCPConnector(ssl=context, limit=limit)
        )

    async def close(self) -> None:
        await self.session.close()

    @staticmethod
    def path(group: str, version: str, namespace: str, plural: str, name: str = "") -> str:
        return f"/apis/{group}/{version}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json", **params: str
    ) -> Any:
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method, self.base + path, data=data, params=params, headers={"Content-Type": content_type}
        ) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {payload.get('message')}")
            return payload

    async def create(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """Creates obj; returns the call's latency in seconds and the stored object."""
        start = time.perf_counter()
        stored = await self.request("POST", self.path(group, version, obj["metadata"]["namespace"], plural), obj)
        return time.perf_counter() - start, stored

    async def apply(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> Any:
        meta = obj["metadata"]
        return await self.request(
            "PATCH",
            self.path(group, version, meta["namespace"], plural, meta["name"]),
            obj,
            "application/apply-patch+yaml",
            fieldManager="slipway",
            force="true",
        )

    async def patch_status(self, group: str, version: str, namespace: str, plural: str, name: str, status: Any) -> Any:
        return await self.request(
            "PATCH",
            self.path(group, version, namespace, plural, name) + "/status",
            {"status": status},
            "application/merge-patch+json",
        )

    async def delete_all(self, group: str, version: str, namespace: str, plural: str) -> None:
        await self.request("DELETE", self.path(group, version, namespace, plural))

    async def watch(self, group: str, version: str, namespace: str, plural: str) -> AsyncIterator[dict[str, Any]]:
        url = self.base + self.path(group, version, namespace, plural)
        async with self.session.get(
            url, params={"watch": "true"}, timeout=aiohttp.ClientTimeout(total=None)
        ) as response:
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
