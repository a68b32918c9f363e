import pytest
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.errors import UnknownNameError, ZslrError
from zslretrieval.registry import Registry


def test_registry_register_get_and_list():
    reg = Registry("thing")

    @reg.register("alpha", aliases=("a",))
    def alpha():
        return 1

    reg.add("beta", 2)
    assert reg.get("alpha") is alpha
    assert reg.get("A") is alpha          # case-insensitive alias
    assert reg.names() == ["alpha", "beta"]
    assert "a" in reg and "gamma" not in reg
    with pytest.raises(ValueError):
        reg.add("alpha", 3)


def test_unknown_name_lists_valid_and_suggests():
    reg = Registry("dataset")
    for n in ("cub", "awa1", "awa2", "sun"):
        reg.add(n, n)
    with pytest.raises(UnknownNameError) as ei:
        reg.get("awa3")
    msg = str(ei.value)
    assert "unknown dataset 'awa3'" in msg and "awa1" in msg and "cub" in msg
    assert ei.value.exit_code == 2
    assert isinstance(ei.value, ZslrError)


def test_unknown_name_with_large_vocabulary_only_suggests():
    valid = [f"attr{i}" for i in range(100)] + ["stripes"]
    e = UnknownNameError("attribute", "stripse", valid)
    assert "stripes" in e.suggestions
    assert "attr50" not in str(e)


def test_cli_maps_zslr_errors_to_exit_codes():
    @cli.command("_raise_for_test", hidden=True)
    def _raise():
        raise UnknownNameError("model", "demm", ["dem", "eszsl"])

    try:
        r = CliRunner().invoke(cli, ["_raise_for_test"])
        assert r.exit_code == 2
        assert "unknown model 'demm'" in r.output
        assert "Traceback" not in r.output
    finally:
        cli.commands.pop("_raise_for_test")
