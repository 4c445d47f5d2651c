"""Errors a user can act on: they carry every problem found, and exit with code 2."""

from __future__ import annotations

from collections.abc import Iterable

from onepiece_hpc.exit_codes import ExitCode


class UserError(Exception):
    """A mistake in the user's input (job file, prompts, model folder, flags, output file).

    The CLI prints it without a traceback and exits with code 2. Each problem names the file,
    field or line, what is wrong and the fix.
    """

    exit_code = ExitCode.REFUSED

    def __init__(self, problems: str | Iterable[str], *, headline: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.headline = headline
        super().__init__(self.render())

    def render(self) -> str:
        if self.headline is None and len(self.problems) == 1:
            return self.problems[0]
        head = self.headline or f"{len(self.problems)} problems found:"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])
