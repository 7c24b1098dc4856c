"""Scale by partitioning: Spark code may not pull population-sized data to the driver."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVER_PULL = re.compile(r"\.(collect|toPandas|toLocalIterator)\(")


def test_spark_code_collects_only_what_is_marked_small():
    offending = []
    for folder in ("rdt_spark", "jobs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if DRIVER_PULL.search(line) and "# small:" not in line:
                    offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offending, "mark a bounded collect with '# small: why':\n" + "\n".join(offending)
