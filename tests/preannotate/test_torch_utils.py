"""torch_utils: device selection and threads."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.learning.torch_utils import device_name, inference, select_device, set_threads


def test_select_device() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device_name(torch.device("cpu")) == "cpu"
    with pytest.raises(ConfigError, match="device must be"):
        select_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        select_device("cuda:1")


def test_threads_and_inference_mode() -> None:
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(0)  # leaves the setting alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError):
        set_threads(-1)
    with inference():
        assert torch.is_inference_mode_enabled()
