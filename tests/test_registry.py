import pytest

from gentrain.core.errors import ConfigError
from gentrain.core.registry import Registry


def test_register_and_get():
    things: Registry = Registry("thing")

    @things.register("alpha")
    def alpha():
        return 1

    assert things.get("alpha") is alpha
    assert "alpha" in things and list(things) == ["alpha"]


def test_unknown_name_suggests_and_lists():
    things: Registry = Registry("model")
    for name in ("vae", "gan", "vaegan"):
        things.register(name)(object())
    with pytest.raises(ConfigError) as info:
        things.get("vaeg")
    message = str(info.value)
    assert "unknown model 'vaeg'" in message
    assert "did you mean 'vae" in message
    assert "available: gan, vae, vaegan" in message


def test_duplicate_registration_is_refused():
    things: Registry = Registry("thing")
    things.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        things.register("a")(2)
