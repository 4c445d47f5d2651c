"""`onepiece bench transport`: size parsing, the table, and one real (small) run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onepiece_hpc.cli.bench_transport import format_table, parse_sizes
from onepiece_hpc.errors import UserError


def test_sizes_parse_binary_units_and_reject_garbage() -> None:
    assert parse_sizes("64K,4M,16MiB,100") == [65536, 4 << 20, 16 << 20, 100]
    with pytest.raises(UserError, match="'4X' is not a size"):
        parse_sizes("64K,4X")


def test_table_has_ratios_to_memcpy_and_mpi() -> None:
    rows = [{"fabric": "memcpy", "bytes": 4 << 20, "gbps": 10.0, "rtt_us": 800.0},
            {"fabric": "mpi-sendrecv", "bytes": 4 << 20, "gbps": 5.0, "rtt_us": 1000.0},
            {"fabric": "ring/shm", "bytes": 4 << 20, "gbps": 8.0, "rtt_us": 900.0}]
    table = format_table(rows)
    assert "| 4 MiB | ring/shm | 8.00 | 0.80 | 1.60 | 900.0 | 0.90 |" in table


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_json_run_launches_its_own_ranks() -> None:
    onepiece = Path(sys.executable).with_name("onepiece")
    result = subprocess.run([str(onepiece), "bench", "transport", "--sizes", "64K", "--trials",
                             "1", "--json"], capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["fabric"] for r in records} == {"memcpy", "mpi-sendrecv", "ring/shm",
                                              "ring/shm:full", "ring/mpi-rma"}
    for record in records:
        assert set(record) == {"fabric", "bytes", "gbps", "rtt_us", "hosts"}
        assert len(record["hosts"]) == 2 and len(set(record["hosts"])) == 1  # both ranks here: ring/shm ran
        assert record["bytes"] == 65536 and record["gbps"] > 0 and record["rtt_us"] > 0
