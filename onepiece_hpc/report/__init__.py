"""`onepiece report`: one self-contained HTML page of an output and its runs.

`output_data` and `telemetry_data` read the store and the telemetry records; `timeline` and
`series` turn them into small binned series (pure numpy); `figures` draws them with plotly;
`contact_sheet` makes the thumbnails; `page`, `sections` and `telemetry_sections` assemble the
HTML; `build` reads, renders and publishes it.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["default_target", "render_report", "write_report"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "build": ["default_target", "render_report", "write_report"],
})
