"""Weights from the Hugging Face Hub, named as timm names them (``hf-hub:timm/resnet50.a1_in1k``):
the snapshot's ``model.safetensors`` and timm's ``config.json``, fetched through
``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, its progress bars) and checked against
the SHA-256 the Hub names the file by."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from resnet_jax import hints
from resnet_jax.errors import WeightsError
from resnet_jax.weights.state_dicts import SAFETENSORS_FILE, timm_model
from resnet_jax.weights.table import HUB_PREFIX, HUB_REPO

FILES = ("config.json", SAFETENSORS_FILE)


def snapshot(name: str, model: str | None) -> tuple[Path, str]:
    """The local folder of the Hub snapshot ``name`` (``hf-hub:ORG/REPO``), fetched where the
    Hub cache lacks it, and its revision; WeightsError, before any download, where the name
    is misspelt or names a timm architecture other than this project's (or ``model``)."""
    repo = name.removeprefix(HUB_PREFIX)
    if not HUB_REPO.fullmatch(repo):
        raise WeightsError(f"{name} is not a Hub repository's name; write it as timm does: "
                           "hf-hub:timm/resnet50.a1_in1k")
    timm = repo.startswith("timm/")
    architecture = timm_model(repo.split("/")[1], name) if timm else None
    if model and timm and architecture != model:
        raise WeightsError(f"{name} holds timm's {architecture}, not a {model}; leave out "
                           f"{hints.name('model')}, or pass {hints.setting('model', architecture)}")
    paths = [_download(repo, file) for file in FILES]
    _check_digest(name, paths[1])
    return paths[1].parent, paths[1].parent.name


def _download(repo: str, file: str) -> Path:
    """The file from the Hub cache where it is there (no network asked: weights of a
    repository do not change under their name), else downloaded into it; huggingface_hub's
    own retry messages are kept quiet, its error said in one line."""
    import huggingface_hub
    from huggingface_hub import errors
    from huggingface_hub.utils import logging

    try:
        return Path(huggingface_hub.hf_hub_download(repo, file, local_files_only=True))
    except errors.LocalEntryNotFoundError:
        pass
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return Path(huggingface_hub.hf_hub_download(repo, file))
    except errors.RepositoryNotFoundError:
        raise WeightsError(f"the Hub has no repository {repo} (or it is private); check its "
                           "name at its page, e.g. hf-hub:timm/resnet50.a1_in1k") from None
    except errors.LocalEntryNotFoundError:
        raise WeightsError(f"{HUB_PREFIX}{repo} is not in the Hub cache and cannot be fetched "
                           "(HF_HUB_OFFLINE, or no network); fetch it where there is network "
                           f"(hf download {repo}) and copy the cache, or pass the snapshot's "
                           "folder") from None
    except errors.RemoteEntryNotFoundError:
        raise WeightsError(f"the Hub repository {repo} holds no {file}: it is not timm's "
                           "safetensors weights with their config.json") from None
    except (OSError, errors.HfHubHTTPError) as error:
        reason = " ".join(str(error).split())[:160]
        raise WeightsError(f"cannot fetch {file} of {HUB_PREFIX}{repo} ({reason}); try again, "
                           "or fetch the snapshot where there is network and pass its "
                           "folder") from None
    finally:
        logging.set_verbosity(verbosity)


def _check_digest(name: str, path: Path) -> None:
    """WeightsError where the file's SHA-256 differs from the one the Hub names it by (the
    cache's blob name, for files the Hub stores by their SHA-256)."""
    blob = path.resolve()
    if not re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return
    with blob.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if digest != blob.name:
        raise WeightsError(f"{name}'s {path.name} is damaged (SHA-256 {digest[:12]}..., the Hub "
                           f"names {blob.name[:12]}...); delete {blob} and load it again")
