"""experiments/paired.py: two versions of the same files compared file by file."""
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
import paired  # noqa: E402


def write_results(folder, rows, metrics=("pesq", "si_sdr")):
    folder.mkdir(parents=True, exist_ok=True)
    header = ["file"] + [f"noisy_{m}" for m in metrics] + [f"enhanced_{m}" for m in metrics] + ["error"]
    lines = [",".join(header)]
    for name, noisy, enhanced in rows:
        lines.append(",".join([name, *map(str, noisy), *map(str, enhanced), ""]))
    (folder / "_results.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_the_difference_is_paired_per_file(tmp_path, capsys):
    # A and B differ by exactly +0.1 PESQ on every file, while the files themselves spread widely:
    # paired, the interval is zero-width around +0.1; unpaired it would straddle zero
    a = write_results(tmp_path / "a", [("f1.wav", (1.0, 0.0), (1.5, 5.0)), ("f2.wav", (2.0, 3.0), (3.0, 9.0)),
                                       ("f3.wav", (1.2, 1.0), (2.0, 7.0)), ("only_a.wav", (1, 1), (1, 1))])
    b = write_results(tmp_path / "b", [("f1.wav", (1.0, 0.0), (1.6, 4.0)), ("f2.wav", (2.0, 3.0), (3.1, 8.0)),
                                       ("f3.wav", (1.2, 1.0), (2.1, 6.0))])
    rows, left_out = paired.compare(paired.read_results(a), paired.read_results(b), ["pesq", "si_sdr", "csig"])
    assert [r[0] for r in rows] == ["pesq", "si_sdr"] and left_out == ["only_a.wav"]
    metric, noisy, mean_a, mean_b, (diff, half, n) = rows[0]
    assert (noisy, mean_a, mean_b, diff, n) == pytest.approx((1.4, 6.5 / 3, 6.8 / 3, 0.1, 3))
    assert half == pytest.approx(0.0, abs=1e-9)
    assert paired.main([str(a), str(b), "--names", "old", "new"]) == 0
    out = capsys.readouterr().out
    assert "| pesq | 1.400 | 2.167 | 2.267 | +0.100 ± 0.000 * | 3 |" in out
    assert "| si_sdr | 1.33 | 7.00 | 6.00 | -1.00 ± 0.00 ! | 3 |" in out
    assert "only_a.wav" in out


def test_unscored_files_are_left_out_of_the_pairs(tmp_path):
    a = write_results(tmp_path / "a", [("f1.wav", (1.0, 0.0), (1.5, 5.0)), ("f2.wav", (2.0, 3.0), ("", ""))])
    b = write_results(tmp_path / "b", [("f1.wav", (1.0, 0.0), (1.7, 5.0)), ("f2.wav", (2.0, 3.0), (3.0, 9.0))])
    rows, _ = paired.compare(paired.read_results(a), paired.read_results(b), ["pesq"])
    assert rows[0][4][2] == 1 and rows[0][4][0] == pytest.approx(0.2)


def test_a_folder_without_results_is_a_one_line_error(tmp_path, capsys):
    a = write_results(tmp_path / "a", [("f1.wav", (1.0, 0.0), (1.5, 5.0))])
    (tmp_path / "empty").mkdir()
    assert paired.main([str(a), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "empty/_results.csv" in err and "calc_metrics.py" in err
