import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for tests/test_device.py (cpu, cuda, cuda:N, mps); the comparisons "
        "against the CPU there run only on another device",
    )


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    from adaptrl.build import resolve_device
    from adaptrl.errors import ConfigError

    try:
        return resolve_device(pytestconfig.getoption("device"))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
