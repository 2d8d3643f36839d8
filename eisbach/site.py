"""The site file: what a pretrained profile leaves to the machine it runs on (the weights, the
text encoder, where the clips come from, a cookies file), written by a command and checked
against the config schema before any job runs.

    python scripts/make_site.py --pretrained medium-base            # writes site.yaml
    snakemake --cores all --configfile config/paper.yaml site.yaml

site.yaml sits at the repository root (git-ignored), outside results/, so `make clean` and a
`docker run --rm` keep it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from eisbach.atomic import atomic_path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
PRETRAINED_BACKENDS = ("stable-audio-tools", "stable-audio-3")


class SiteError(ValueError):
    """A site file or merged config that cannot run; the message names the key."""


def missing_weights(config: dict) -> str | None:
    """Why a pretrained backend cannot load, naming the key, or None when it can try."""
    backend = config.get("backend", {})
    if backend.get("name") in PRETRAINED_BACKENDS and not str(backend.get("pretrained", "")):
        return (
            f"backend.pretrained is empty, and backend {backend['name']!r} needs weights: name a "
            "hub id, a model name or a local folder with model_config.json and model.safetensors "
            "in a site file (python scripts/make_site.py --pretrained ...; docs/cloud.md) and "
            "pass it after the profile: --configfile config/paper.yaml site.yaml"
        )
    return None


def check_local_model(path: Path, key: str, files: tuple[str, ...]) -> None:
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise SiteError(f"{key}: the folder {path} has no {', '.join(missing)}")


def build_site(args: argparse.Namespace) -> dict:
    site: dict = {"backend": {"pretrained": args.pretrained}}
    if args.text_encoder:
        site["backend"]["stable_audio_3"] = {"text_encoder": args.text_encoder}
    data: dict = {}
    if args.audio_dir:
        data |= {"source": "local", "audio_dir": args.audio_dir}
    if args.musiccaps_csv:
        data["musiccaps_csv"] = args.musiccaps_csv
    if args.cookies:
        data["cookies"] = args.cookies
    if data:
        site["data"] = data
    return site


def check_site(site: dict, profile: Path, check_paths: bool) -> dict:
    """The config the workflow would see (config.yaml, the profile, the site file), validated
    against the schema as the Snakefile does; returns it."""
    from snakemake.utils import update_config, validate

    # Merged as Snakemake merges --configfile files: its own update_config, in order.
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    update_config(config, yaml.safe_load(profile.read_text()))
    update_config(config, site)
    try:
        validate(config, str(SCHEMA))
    except Exception as err:  # snakemake's WorkflowError wraps jsonschema's, naming the key
        raise SiteError(f"{profile} + site file: {err}") from err
    reason = missing_weights(config)
    if reason:
        raise SiteError(reason)
    if check_paths:
        pretrained = Path(config["backend"]["pretrained"])
        if pretrained.is_absolute() or pretrained.exists():
            check_local_model(
                pretrained, "backend.pretrained", ("model_config.json", "model.safetensors")
            )
        text_encoder = config["backend"].get("stable_audio_3", {}).get("text_encoder", "")
        if text_encoder and (Path(text_encoder).is_absolute() or Path(text_encoder).exists()):
            check_local_model(
                Path(text_encoder), "backend.stable_audio_3.text_encoder", ("config.json",)
            )
        for key in ("audio_dir", "musiccaps_csv", "cookies"):
            value = config["data"].get(key, "")
            if value and not Path(value).exists():
                raise SiteError(f"data.{key}: {value} does not exist")
    return config


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pretrained",
        required=True,
        help="backend.pretrained: a hub id, a stable_audio_3 model name (medium-base) or a "
        "local folder with model_config.json and model.safetensors",
    )
    parser.add_argument(
        "--text-encoder",
        help="backend.stable_audio_3.text_encoder: a local T5Gemma folder or hub id",
    )
    parser.add_argument("--audio-dir", help="data.audio_dir (sets data.source: local)")
    parser.add_argument("--musiccaps-csv", help="data.musiccaps_csv: musiccaps-public.csv")
    parser.add_argument("--cookies", help="data.cookies: a cookies.txt for yt-dlp")
    parser.add_argument("--profile", type=Path, default=REPO_ROOT / "config" / "paper.yaml")
    parser.add_argument("--out", type=Path, default=Path("site.yaml"), help="or - for stdout")
    parser.add_argument(
        "--no-check-paths",
        action="store_true",
        help="the paths name another machine's files (a container's mounts): check only the schema",
    )
    args = parser.parse_args(argv)
    site = build_site(args)
    try:
        check_site(site, args.profile, check_paths=not args.no_check_paths)
    except SiteError as err:
        sys.exit(f"make_site: {err}")
    text = (
        "# Written by scripts/make_site.py; checked against workflow/schemas/ with "
        f"{args.profile.name}.\n" + yaml.safe_dump(site, sort_keys=True)
    )
    if str(args.out) == "-":  # in a container whose user cannot write the host's folder
        sys.stdout.write(text)
        return args.out
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    profile = args.profile.resolve()
    profile = profile.relative_to(REPO_ROOT) if profile.is_relative_to(REPO_ROOT) else profile
    print(f"wrote {args.out}: run with --configfile {profile} {args.out}")
    return args.out
