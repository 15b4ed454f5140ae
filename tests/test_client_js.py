"""Node tests of the JavaScript client (tests/js/*.test.mjs) against a real `qmx serve`.

Each file runs in its own ``node --experimental-websocket --test`` process (Node >= 20; the flag
gives Node 20 its global WebSocket), with the daemon's base URL in ``QMX_URL``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")

pytestmark = [pytest.mark.e2e]


def _node_major() -> int:
    if NODE is None:
        return 0
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=10).stdout
    return int(out.strip().lstrip("v").split(".")[0])


@pytest.mark.parametrize("name", sorted(p.name for p in JS_DIR.glob("*.test.mjs")))
def test_node(name: str, daemon: dict[str, Any]) -> None:
    if _node_major() < 20:
        pytest.skip("Node.js >= 20 is not installed; the JavaScript client tests need it")
    env = {**os.environ, "QMX_URL": daemon["url"], "NODE_NO_WARNINGS": "1"}
    proc = subprocess.run(
        [NODE, "--experimental-websocket", "--test", "--test-reporter=spec", str(JS_DIR / name)],
        capture_output=True, text=True, env=env, timeout=100,
    )
    assert proc.returncode == 0, f"node --test {name} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert "pass 0" not in proc.stdout, f"no Node test ran:\n{proc.stdout[-3000:]}"
