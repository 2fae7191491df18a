"""``bench --problems path/to/problem.json`` (documented in the README): results are keyed by the problem's name, so a
JSON path runs to the end and writes its figures under that name."""

import json

from flowlite.jobs.bench import run_bench
from flowlite.toy.problems import PROBLEM_DIR


def test_bench_takes_a_problem_json_path(tmp_path):
    problem = json.loads((PROBLEM_DIR / "weak.json").read_text())
    problem["name"] = "my_weak"
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(problem))
    result = run_bench([str(path)], ["rwr"], iterations=1, out=tmp_path / "bench", eval_samples=200,
                       curve_points=1, curve_samples=100, own_optimum_n=0, progress=False, log=lambda line: None)
    assert result["config"]["problems"] == ["my_weak"]
    assert [r["problem"] for r in result["records"]] == ["my_weak"]
    assert (tmp_path / "bench" / "curves_my_weak.png").is_file()
    assert "my_weak" in (tmp_path / "bench" / "summary.md").read_text()
