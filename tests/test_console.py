"""User-facing messages must survive narrow, non-terminal consoles (CI logs, pipes)."""

from gentrain.console import console, print_error


def test_errors_are_not_wrapped_and_brackets_are_not_markup(capsys, monkeypatch):
    monkeypatch.setattr(console, "_width", 40)
    path = "/a/very/long/directory/name/that/is/wider/than/the/console/last.ckpt"
    print_error(f"no checkpoint at {path}; valid: [vae, gan] [bold]x[/bold]")
    out = capsys.readouterr().out
    assert out == f"error: no checkpoint at {path}; valid: [vae, gan] [bold]x[/bold]\n"
