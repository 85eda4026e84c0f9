"""The demo inputs bundled with the package (a synthetic portrait and speech), found by :func:`demo_asset`;
``scripts/make_demo_assets.py`` regenerates them."""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError

DEMO_ASSETS = ("demo_portrait.png", "demo_speech.wav")


def demo_asset(name: str) -> Path:
    """The path of a bundled demo input: ``demo_portrait.png`` (512 x 512 synthetic face) or ``demo_speech.wav``
    (about 4 s of synthetic speech, 16 kHz mono). ``scripts/make_demo_assets.py`` regenerates them.

    Args:
        name: File name, one of :data:`DEMO_ASSETS`.

    Returns:
        Path to the file inside the installed package.

    Raises:
        InputError: Unknown name.
        FileNotFoundError: The package was installed without its assets, or not as plain files.
    """
    from importlib.resources import files

    if name not in DEMO_ASSETS:
        raise InputError(f"unknown demo asset {name!r}; there are: {', '.join(DEMO_ASSETS)}")
    resource = files("imtalker").joinpath("assets", name)
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(f"demo asset {name} is missing from the installed package (looked in {path})")
    return path
