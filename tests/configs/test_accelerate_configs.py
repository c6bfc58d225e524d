"""Every shipped accelerate config loads with accelerate's own parser and asks for distribution."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "accelerate").glob("*.yaml"))


def test_configs_are_shipped():
    assert {p.stem for p in CONFIGS} >= {"ddp", "ddp_multinode", "fsdp", "deepspeed_zero3"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_loads(path):
    config = load_config_from_file(str(path))
    assert config.distributed_type in (DistributedType.MULTI_GPU, DistributedType.FSDP, DistributedType.DEEPSPEED)
    assert config.num_processes > 1 and config.mixed_precision == "no"  # tuneloop applies bf16 itself
    if config.num_machines > 1:
        assert config.main_process_ip and config.main_process_port
