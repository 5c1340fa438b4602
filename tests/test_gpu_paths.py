"""What a CUDA user meets, checked on a CPU by answering torch.cuda's questions with mocks."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

import cifarlab
from cifarlab.cli import main
from cifarlab.config import make_run_config
from cifarlab.data import load_dataset
from cifarlab.errors import CifarlabError
from cifarlab.train.precision import resolve_device, resolve_precision


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda:x", "must be auto, cpu, cuda or cuda:N \\(got 'cuda:x'\\)"),
        ("cuda1", "must be auto, cpu, cuda or cuda:N \\(got 'cuda1'\\)"),
        ("mps", "Apple GPUs \\(mps\\) are not supported yet; use --device cpu"),
    ],
)
def test_a_malformed_device_is_refused_before_anything_runs(device, message):
    with pytest.raises(CifarlabError, match=message):
        make_run_config(device=device)


def test_a_gpu_the_machine_does_not_have_is_named_before_the_data_loads(capsys):
    with (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("torch.cuda.device_count", return_value=2),
    ):
        assert resolve_device("cuda:1") == torch.device("cuda:1")
        with pytest.raises(CifarlabError, match="--device cuda:2: this machine shows cuda:0 to "
                           "cuda:1; pick one of them"):  # fmt: skip
            resolve_device("cuda:2")
        # the CLI says so in one line, with no data given: nothing was read
        assert main(["train", "--device", "cuda:2", "--data", "/nowhere", "--quiet"]) == 2
    assert "this machine shows cuda:0 to cuda:1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")],
)
def test_auto_precision_takes_bf16_only_on_gpus_with_bf16_tensor_cores(capability, expected):
    # a T4 (7.5) or V100 (7.0) emulates bf16, and torch.cuda.is_bf16_supported() says yes
    with (
        mock.patch("torch.cuda.is_bf16_supported", return_value=True),
        mock.patch("torch.cuda.get_device_capability", return_value=capability) as asked,
    ):
        assert resolve_precision("auto", torch.device("cuda:1"), True) == expected
    asked.assert_called_once_with(torch.device("cuda:1"))  # the GPU it trains on, not GPU 0


def test_bf16_asked_of_a_gpu_without_bf16_tensor_cores_warns(tiny_archive, capsys):
    # the CPU path warns alike; stopped at the model check, before anything is recorded
    with (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("torch.cuda.device_count", return_value=1),
        mock.patch("torch.cuda.get_device_capability", return_value=(7, 5)),
        mock.patch("torch.cuda.get_rng_state", return_value=torch.zeros(16, dtype=torch.uint8)),
        mock.patch("torch.cuda.set_rng_state"),  # the run forks the GPU's generator
        pytest.warns(
            UserWarning,
            match="this GPU has no bf16 tensor cores .* use --precision "
            "fp16, or auto, which picks it here",
        ),  # fmt: skip
        pytest.raises(CifarlabError, match="unknown model"),
    ):
        cifarlab.train(data=str(tiny_archive), device="cuda", precision="bf16",
                       model="no-such-net", quiet=True)  # fmt: skip


def test_a_cpu_run_on_a_gpu_machine_leaves_cuda_alone(tiny_archive, tmp_path):
    from cifarlab.train.build import build_trainer

    def started_cuda(*args, **kwargs):
        raise AssertionError("a CPU run touched CUDA's generators")

    with (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("torch.cuda.device_count", return_value=2),
        mock.patch("torch.cuda.get_rng_state_all", side_effect=started_cuda),
        mock.patch("torch.cuda.get_rng_state", side_effect=started_cuda),
        mock.patch("torch.cuda.set_rng_state_all", side_effect=started_cuda),
        mock.patch("torch.cuda.set_rng_state", side_effect=started_cuda),
        mock.patch("torch.cuda.manual_seed_all", side_effect=started_cuda),
    ):
        result = cifarlab.train(data=str(tiny_archive), workspace=str(tmp_path / "ws"),
                                device="cpu", epochs=1, val_size=30, quiet=True)  # fmt: skip
        state = torch.load(result.run_dir / "last.pt", weights_only=True)
        assert state["rng_cuda"] == []  # so it resumes where fewer GPUs are visible
        # a checkpoint of before, with a state per visible GPU, loads on the CPU untouched
        state["rng_cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 2
        config = make_run_config(data=str(tiny_archive), device="cpu", val_size=30)
        data = load_dataset(config.data, val_size=30)
        trainer = build_trainer(config, data, torch.device("cpu"), "fp32")
        trainer.load_state_dict(state)
        assert trainer.state_dict()["rng_cuda"] == []


def test_compile_on_a_gpu_without_a_c_compiler_says_so_before_the_run():
    from cifarlab.runner import _require_compiler

    with mock.patch("shutil.which", return_value=None):
        with pytest.raises(CifarlabError, match="--compile on a GPU needs a C compiler \\(gcc or "
                           "clang, for Triton\\) and none was found"):  # fmt: skip
            _require_compiler(torch.device("cuda"))
        with pytest.raises(CifarlabError, match="--compile on the CPU needs a C\\+\\+ compiler"):
            _require_compiler(torch.device("cpu"))
