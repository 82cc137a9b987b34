from __future__ import annotations

import dataclasses

import pytest

from genprm.sandbox import SandboxConfig


def test_defaults_are_valid() -> None:
    cfg = SandboxConfig()
    assert cfg.timeout_s == 5.0
    assert cfg.isolation == "auto"
    assert cfg.preimport == ("sympy", "numpy", "scipy")
    assert cfg.pool_size == 2


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SandboxConfig().timeout_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_s", 0),
        ("timeout_s", -1.0),
        ("timeout_s", float("nan")),
        ("timeout_s", float("inf")),
        ("timeout_s", "5"),
        ("timeout_s", True),
        ("memory_mb", 10),
        ("memory_mb", 2048.0),
        ("cpu_s", 0),
        ("max_processes", 0),
        ("max_file_mb", 0),
        ("max_output_chars", 0),
        ("pool_size", -1),
        ("pool_size", True),
        ("isolation", "docker"),
        ("preimport", "sympy"),
        ("preimport", ["sympy"]),
        ("preimport", ("sympy", "not a module")),
        ("preimport", ("",)),
    ],
)
def test_bad_values_name_parameter_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        SandboxConfig(**{field: value})  # type: ignore[arg-type]
    assert field in str(info.value)
    assert repr(value) in str(info.value) or field == "preimport"


def test_dotted_preimport_is_fine() -> None:
    assert SandboxConfig(preimport=("scipy.optimize",)).preimport == ("scipy.optimize",)
