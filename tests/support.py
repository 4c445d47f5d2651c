"""Helpers the tests share: job-file writers, ways to call the CLI, tree digests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
CLI_TIMEOUT = 240  # seconds; a CLI call that takes longer fails the test instead of hanging CI


def builtin_model(cache: Path, name: str) -> Path:
    """The folder of a built-in model, built into the test cache if needed."""
    from onepiece_hpc.models.builtin import builtin_folder

    return builtin_folder(name, cache)


@dataclass
class Result:
    code: int
    out: str
    err: str


def invoke(*args: str) -> Result:
    """Run `onepiece ARGS` in this process (fast: models and imports are shared)."""
    from onepiece_hpc.cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def run_cli(*args: str, timeout: float = CLI_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    """Run `onepiece ARGS` as a real process, bounded in time."""
    return subprocess.run([sys.executable, "-m", "onepiece_hpc.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=os.environ.copy(), **kwargs)


def write_job(folder: Path, lines: list[str] | str | None = None, prompt_file: str = "prompts.txt",
              **fields) -> Path:
    """A job file in `folder` with sensible tiny defaults; `fields` override or add YAML lines."""
    folder.mkdir(parents=True, exist_ok=True)
    if lines is not None:
        text = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
        (folder / prompt_file).write_text(text, encoding="utf-8")
    values = {"name": "t", "model": "builtin:tiny-sd", "prompts": prompt_file,
              "params": "{steps: 2, guidance: 5.0, height: 64, width: 64}", "seed": "7",
              "microbatch": "1", "output": "out/t.h5", "device": "cpu"}
    values.update(fields)
    body = "\n".join(f"{key}: {value}" for key, value in values.items() if value is not None)
    path = folder / "job.yaml"
    path.write_text(textwrap.dedent(body) + "\n", encoding="utf-8")
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, to prove that nothing was changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
