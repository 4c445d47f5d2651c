"""Keep diffusers and transformers from printing progress bars and advice into our output.

Importing the two costs a process seconds, so a process that may never load a model (the
launcher, rank 0, a rank before its stage loads) only sets what they read as they are imported;
the call that loads a pipeline quiets them in full (diffusers' bars read no environment).
"""

from __future__ import annotations

import os

#: what the two libraries (and huggingface_hub's bars, which transformers uses) read as they load
QUIET_ENVIRONMENT = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def quiet_environment(verbose: int = 0) -> None:
    """Set the environment the libraries read when they are imported (here or in a child process);
    a value the user set is kept."""
    if verbose >= 2:
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def quiet_libraries(verbose: int = 0) -> None:
    """diffusers and transformers print progress bars and advice by default; keep runs readable.
    This imports both: call it where a pipeline is about to load."""
    if verbose >= 2:
        return
    quiet_environment(verbose)
    import transformers.utils.logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    import diffusers.utils.logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
