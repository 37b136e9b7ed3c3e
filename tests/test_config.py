"""The notebooks' parameters (papermill -p) are checked up front, with one message naming each bad one."""
import pytest
import torch

from filmlib.config import check_parameters, device_problem


def test_good_parameters_pass():
    check_parameters(scale="smoke", source="synth", workers=2, seed=0, device="auto")
    check_parameters(scale="cpu", device="cpu")


@pytest.mark.parametrize("kw, words", [
    ({"scale": "huge"}, "scale='huge' is not one of smoke, cpu, paper"),
    ({"device": "tpu"}, "device='tpu' is not one of auto, cpu, cuda, cuda:N"),
    ({"device": "cuda:x"}, "device='cuda:x' is not one of"),
    ({"workers": 0}, "workers=0 must be a whole number >= 1"),
    ({"source": "clevr", "data_root": "/nowhere/CLEVR_v1.0"}, "python -m filmlib download clevr --to /nowhere"),
])
def test_a_bad_parameter_is_named(kw, words):
    with pytest.raises(ValueError, match="bad notebook parameters") as e:
        check_parameters(**{"scale": "smoke", **kw})
    assert words in str(e.value)


def test_a_clevr_folder_still_to_download_is_accepted(tmp_path):
    """Notebook 00 downloads CLEVR_v1.0 into an existing folder: only the folder itself may be missing."""
    check_parameters(scale="smoke", source="clevr", data_root=str(tmp_path / "CLEVR_v1.0"))
    with pytest.raises(ValueError, match="does not exist"):
        check_parameters(scale="smoke", source="clevr", data_root=str(tmp_path / "nowhere" / "CLEVR_v1.0"))


def test_asking_for_a_gpu_that_is_not_there_is_refused():
    n = torch.cuda.device_count()
    problem = device_problem(f"cuda:{n}")
    assert problem is not None and ("sees none" in problem if n == 0 else f"sees {n}" in problem)
    assert device_problem("auto") is None and device_problem("cpu") is None
