"""Running jobs: preparation (validate everything first), the monolithic reference path, progress."""
