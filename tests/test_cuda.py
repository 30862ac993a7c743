"""--device cuda, on a machine with CUDA (skipped elsewhere, CI included): every script trains there and computes the
update the CPU computes, and what a CUDA run saves is not tied to CUDA: its training state resumes on the CPU and its
checkpoint warm-starts a CPU run."""

import pytest
import torch

from cleanmarl.utils.layout import STATE_FILE
from tests.test_resume import FLAGS, logs
from tests.test_smoke import SCRIPTS, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_cuda_run_updates_as_on_the_cpu_and_goes_on_on_the_cpu(script, tmp_path):
    (tmp_path / "cpu").mkdir(), (tmp_path / "cuda").mkdir(), (tmp_path / "warm").mkdir()
    flags = [*FLAGS, "--total-timesteps", "2000", "--save-model"]
    for device in ("cpu", "cuda"):
        run(tmp_path / device, *flags, "--device", device, script=script)
    (cpu_dir,), (cuda_dir,) = ((tmp_path / device / "runs").iterdir() for device in ("cpu", "cuda"))
    cpu, cuda = logs(cpu_dir), logs(cuda_dir)
    # The same weights (made on the CPU from the seed), the same acting (numpy) and the same batch: the first logged
    # loss differs only by float rounding between the two devices' kernels.
    (step, cpu_loss), (cuda_step, cuda_loss) = cpu["train/loss"][0], cuda["train/loss"][0]
    assert step == cuda_step and cuda_loss == pytest.approx(cpu_loss, rel=1e-3)

    state = torch.load(cuda_dir / STATE_FILE, map_location="cpu", weights_only=True)
    assert state["step"] >= 2000  # saved at the end
    run(tmp_path / "cuda", "--resume", str(cuda_dir.relative_to(tmp_path / "cuda")), "--total-timesteps", "3000",
        "--device", "cpu", script=script)  # fmt: skip
    assert logs(cuda_dir)["records"][-1][0] > 2000  # evaluations of the resumed, CPU part

    (model,) = cuda_dir.glob("*.cleanmarl_model")
    run(
        tmp_path / "warm",
        "--load-model",
        str(model),
        "--total-timesteps",
        "300",
        "--device",
        "cpu",
        script=script,
    )
