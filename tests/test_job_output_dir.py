"""xtalhpc.job.OutputDir: what generate uses of it (issue 14) and the default behaviour other jobs rely on."""
from __future__ import annotations

import json

import pytest

from xtalhpc.errors import InputError
from xtalhpc.job import OutputDir


def test_refuse_other_config_names_the_changed_keys_by_default(tmp_path):
    out = OutputDir(tmp_path, "demo")
    out.refuse_other_config("c.json", {"a": 1, "b": [1, 2]}, {"a": 1, "b": (1, 2)})  # same values: no error
    with pytest.raises(InputError) as e:
        out.refuse_other_config("c.json", {"a": 1, "t": {"x": 0.5}}, {"a": 2, "t": {"x": 0.5}}, extra=["data"])
    assert str(e.value).startswith(f"{tmp_path / 'c.json'}: {tmp_path} holds the output of another demo config "
                                   "(changed: a 1 -> 2, data); rerun the same command")


def test_holds_and_differ_let_a_digest_decide(tmp_path):
    out = OutputDir(tmp_path, "generate", holds="a dataset generated with another config")
    # the digests differ although no key does (e.g. the input files changed): refused, reason unknown
    with pytest.raises(InputError, match=r"holds a dataset generated with another config \(changed: unknown\)"):
        out.refuse_other_config("generate.json", {"seed": 0}, {"seed": 0}, differ=True)
    # the digests agree: keys that differ only in form do not refuse
    out.refuse_other_config("generate.json", {"seed": 0}, {"seed": 7}, differ=False)
    with pytest.raises(InputError, match=r"another config \(changed: seed 0 -> 7, instrument\)"):
        out.refuse_other_config("generate.json", {"seed": 0}, {"seed": 7}, extra=["instrument"], differ=True)


def test_read_json_names_the_file_it_cannot_read(tmp_path):
    out = OutputDir(tmp_path, "demo")
    (tmp_path / "c.json").write_text(json.dumps({"a": 1}))
    assert out.read_json("c.json") == {"a": 1}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError) as e:
        out.read_json("bad.json")
    assert e.value.source == str(tmp_path / "bad.json") and "cannot read the existing config" in str(e.value)
    with pytest.raises(InputError, match="cannot read the existing config"):
        out.read_json("missing.json")


def test_lock_refuses_a_second_holder_until_released(tmp_path):
    first, second = OutputDir(tmp_path / "o", "demo"), OutputDir(tmp_path / "o", "demo")
    first.lock()
    try:
        with pytest.raises(InputError, match=r"another `xtalhpc demo` is writing to .* \(pid \d+ on "):
            second.lock()
    finally:
        first.unlock()
    second.lock()
    second.unlock()
    assert (tmp_path / "o" / "demo.lock").is_file()
