"""Keep diffusers and transformers from printing progress bars and advice into our output."""

from __future__ import annotations


def quiet_libraries(verbose: int = 0) -> None:
    """diffusers and transformers print progress bars and advice by default; keep runs readable."""
    if verbose >= 2:
        return
    import transformers.utils.logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    import diffusers.utils.logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
