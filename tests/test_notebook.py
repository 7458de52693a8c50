"""The demo notebook (notebooks/moving_bandits_demo.ipynb) runs top to bottom, and again.

It is executed with nbclient in a python3 kernel of this interpreter, in smoke mode
(MLSH_NOTEBOOK_SMOKE=1: the `smoke` preset and a tiny evaluation) on the CPU, from the notebooks/
folder of this checkout (so it clones and installs nothing), with its runs sent to a temporary
folder (MLSH_NOTEBOOK_RUNS): nothing is written into the repository. The second execution must find
the first one's finished run and resume it (no training, no error) rather than refuse a non-empty
run folder.
"""

import json
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (pip install -e '.[test]')")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "moving_bandits_demo.ipynb"
RESULT_PREFIX = "demo result: "


def test_saved_notebook_is_clean_and_colab_ready():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "save the notebook without outputs"
    setup = code[0].source
    assert 'REPO_URL = ""  # @param' in setup  # the Colab form field the user fills in
    assert "[cuda]" in setup and "nvidia-smi" in setup
    assert "--no-baseline" in "".join(cell.source for cell in code)


def _kernel_manager(tmp_path: pathlib.Path) -> KernelManager:
    """A python3 kernel of this interpreter, whatever kernels are installed elsewhere."""
    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _execute(tmp_path: pathlib.Path, env: dict) -> dict:
    """Runs the whole notebook in a fresh kernel; returns the last cell's `demo result` (raises on any error)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=300, allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute(env=env)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"cell failed: {cell.source[:80]!r}"
    streams = [o.text for o in nb.cells[-1].outputs if o.output_type == "stream" and o.name == "stdout"]
    lines = [line for line in "".join(streams).splitlines() if line.startswith(RESULT_PREFIX)]
    assert len(lines) == 1, f"the last cell printed no '{RESULT_PREFIX}' line: {streams}"
    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 2, "the plots cell shows the learning curve and the sub-policies"
    return json.loads(lines[0][len(RESULT_PREFIX):])


def test_notebook_runs_twice_in_smoke_mode(tmp_path):
    runs = tmp_path / "runs"
    env = dict(os.environ, MLSH_NOTEBOOK_SMOKE="1", MLSH_NOTEBOOK_RUNS=str(runs), JAX_PLATFORMS="cpu",
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a fresh runtime
    repo_runs_before = (ROOT / "runs").exists()

    first = _execute(tmp_path / "first", env)
    run_dir = runs / "demo_smoke_s0"
    assert first["run_dir"] == str(run_dir) and not first["resumed"]
    assert first["update"] == first["num_updates"] == 3  # the smoke preset's updates, loaded back
    assert len(first["fraction_ending_at_goal_slot"]) == 2  # K=2 sub-policies x 2 goal slots
    # Fractions of the 16 episodes run per sub-policy; a return of at most 1 per step of a 50-step episode.
    assert all(f * 16 == pytest.approx(round(f * 16)) for pair in first["fraction_ending_at_goal_slot"] for f in pair)
    assert first["hierarchy_mean_return"] <= 50.0
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png", "subpolicies.png"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "baseline_shared").exists()  # MLSH only unless TRAIN_BASELINE is ticked

    second = _execute(tmp_path / "second", env)  # the same run folder: resumed (finished, so not retrained)
    assert second["run_dir"] == str(run_dir) and second["resumed"]
    assert second["update"] == 3 and second["fraction_ending_at_goal_slot"] == first["fraction_ending_at_goal_slot"]
    assert sorted(p.name for p in runs.iterdir()) == ["demo_smoke_s0"]
    assert (ROOT / "runs").exists() == repo_runs_before  # nothing written into the checkout
