"""User-facing messages must survive narrow, non-terminal consoles (CI logs, pipes)."""

import io

import pytest

from gentrain.models.vaegan import VAEGAN
from gentrain.tracking.console import errors, print_error


def test_errors_are_not_wrapped_and_brackets_are_not_markup(capsys, monkeypatch):
    monkeypatch.setattr(errors, "_width", 40)
    path = "/a/very/long/directory/name/that/is/wider/than/the/console/last.ckpt"
    print_error(f"no checkpoint at {path}; valid: [vae, gan] [bold]x[/bold]")
    captured = capsys.readouterr()
    assert captured.out == ""  # on stderr, where shells and scripts look
    assert captured.err == f"error: no checkpoint at {path}; valid: [vae, gan] [bold]x[/bold]\n"


# What a VAE-GAN logs each window: eight loss terms, three gradient norms, two gates.
VAEGAN_TERMS = {
    "prior": 20.16,
    "llike": 271.3,
    "gan_d": 1.668,
    "gan_dec": 2.094,
    "d_real": 0.6512,
    "d_recon": 0.3121,
    "d_prior": 0.2874,
    "gate_d": 1.0,
    "gate_dec": 1.0,
    "grad_norm_encoder": 12.5,
    "grad_norm_decoder": 8.25,
    "grad_norm_discriminator": 3.5,
}


def _render(width, **overrides):
    from rich.console import Console

    from gentrain.tracking.console import progress_lines

    args = dict(
        epoch="3",
        step=12_345,
        total=40_000,
        elapsed=62.0,
        eta=725.0,
        images_per_sec=2807.0,
        losses=VAEGAN.logged_terms.ordered(VAEGAN_TERMS),  # as the trainer hands them over
    )
    args.update(overrides)
    recorder = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    for line in progress_lines(recorder.width, **args):
        recorder.print(line)
    return recorder.export_text().splitlines()


@pytest.mark.parametrize("width", [60, 80, 120])
def test_progress_keeps_bar_step_elapsed_and_eta_at_any_width(width):
    lines = _render(width)
    assert 1 <= len(lines) <= 2
    assert all(len(line) <= width for line in lines)
    first = lines[0]
    assert first.startswith("epoch 3 ━━━━━━━━━━")  # the bar, at least 10 cells
    assert "12,345/40,000" in first and "0:01:02" in first and "eta 0:12:05" in first
    shown = " ".join(lines)
    # Each network's own loss before anything else; as many terms as fit.
    assert "llike=271.3" in shown and "gan_dec=2.094" in shown and "gan_d=1.668" in shown
    assert shown.index("llike=") < shown.index("gan_dec=") < shown.index("gan_d=")
    assert "grad_norm" not in shown or shown.index("d_prior=") < shown.index("grad_norm")


def test_wider_terminals_show_more_terms_and_mark_what_is_left_out():
    counts = {w: " ".join(_render(w)).count("=") for w in (60, 80, 120)}
    assert counts[60] < counts[80] < counts[120]
    assert _render(60)[1].endswith("…")  # 12 terms never fit in 60 columns


def test_few_terms_share_the_first_line():
    lines = _render(120, losses={"loss_g": 0.9, "loss_d": 1.2})
    assert len(lines) == 1 and lines[0].endswith("2,807 img/s loss_g=0.9 loss_d=1.2")


def test_no_speed_before_the_first_window_is_measured():
    lines = _render(80, images_per_sec=None, losses={}, eta=None)
    assert lines == [lines[0]] and "img/s" not in lines[0] and "eta -:--:--" in lines[0]
