"""Where model weights come from: one table of default sources, resolved through huggingface_hub.

This is the only module that touches the network. Everything goes through `hf_hub_download` /
`snapshot_download`, so the hub cache (`HF_HOME` / `HF_HUB_CACHE`), offline mode (`HF_HUB_OFFLINE=1`)
and the token (`HF_TOKEN` or `hf auth login`) work the way huggingface_hub documents them.

A weights reference (`base`, `motion_adapter`, … of a `ModelSpec`) is one of:

- a local file or folder: `./realisticVision.safetensors`, `~/models/my-adapter/`;
- a hub repository (a diffusers folder): `owner/name`, optionally `owner/name@revision`;
- a file in a hub repository: `owner/name/path/file.safetensors` (or `owner/name@revision/path/file.ext`).

When weights are missing and the hub cannot be reached (or `HF_HUB_OFFLINE=1`), a `WeightsError` says
which files of which repository are missing and the exact command that fetches them.

Revisions are "main" for now: the table was written without hub access, so no commit could be looked
up. Pin a `revision` to a commit hash here to make downloads reproducible.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from huggingface_hub.file_download import repo_folder_name

from layeranim._version import __version__
from layeranim.errors import UsageError, WeightsError

logger = logging.getLogger(__name__)

HOME_ENV = "LAYERANIM_HOME"
FAMILIES = ("sd15", "sdxl")
COMPONENTS = ("base", "transparent_attn", "transparent_encoder", "transparent_decoder", "motion_adapter")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def layeranim_home() -> Path:
    """layeranim's user directory (the tiny preset lives there): $LAYERANIM_HOME, else ~/.cache/layeranim."""
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser() if value else Path("~/.cache/layeranim").expanduser()


def hub_cache_dir() -> Path:
    """The huggingface_hub cache in use (`HF_HUB_CACHE`, or `$HF_HOME/hub`)."""
    return Path(hub_constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether huggingface_hub was told to stay offline (`HF_HUB_OFFLINE=1`)."""
    from_env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(hub_constants.HF_HUB_OFFLINE) or from_env


def hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the Hub cannot be reached right now (one phrase), or None when a connection opens.

    One TCP connection to the endpoint's host, so a machine without network fails in seconds instead of
    through huggingface_hub's retries. Skipped (None) behind an HTTP(S) proxy, which a direct connection
    would not use.
    """
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    url = urlsplit(hub_constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({exc.strerror or type(exc).__name__})"


@dataclass(frozen=True)
class WeightSource:
    """Weights on the Hugging Face Hub: one file (`filename`) or a diffusers folder (`filename=None`)."""

    repo_id: str
    filename: str | None = None  # None: the repository (its `allow_patterns`) is a diffusers folder
    revision: str = "main"  # a branch, tag or commit; pin to a commit hash for reproducible downloads
    subfolder: str | None = None
    allow_patterns: tuple[str, ...] | None = None  # for folders: which files to fetch (None: all)
    description: str = ""

    @property
    def path_in_repo(self) -> str | None:
        """The file's path inside the repository (None for a folder)."""
        if self.filename is None:
            return None
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename

    @property
    def ref(self) -> str:
        """The reference a user would type for these weights (`owner/name[@rev][/file]`)."""
        repo = self.repo_id if self.revision == "main" else f"{self.repo_id}@{self.revision}"
        inner = self.path_in_repo or self.subfolder
        return f"{repo}/{inner}" if inner else repo

    def files(self) -> list[str]:
        """The files (or glob patterns) this source is made of."""
        if self.path_in_repo is not None:
            return [self.path_in_repo]
        if self.allow_patterns:
            return list(self.allow_patterns)
        return [f"{self.subfolder}/*"] if self.subfolder else ["*"]

    def hf_command(self, files: list[str] | None = None) -> str:
        """The `hf download …` command that fills the hub cache with these files."""
        parts = ["hf", "download", self.repo_id]
        wanted = files if files is not None else self.files()
        if wanted != ["*"]:
            for name in wanted:
                if any(ch in name for ch in "*?["):
                    parts += ["--include", name]
                else:
                    parts.append(name)
        if self.revision != "main":
            parts += ["--revision", self.revision]
        return shlex.join(parts)


_LAYERDIFFUSE_V1 = "LayerDiffusion/layerdiffusion-v1"

_SD15_BASE_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "feature_extractor/preprocessor_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
_SDXL_BASE_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "tokenizer_2/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
_MOTION_ADAPTER_FILES = ("config.json", "diffusion_pytorch_model.safetensors")

# The one table of default weights, by model family and component.
DEFAULT_SOURCES: dict[str, dict[str, WeightSource]] = {
    "sd15": {
        "base": WeightSource(
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            allow_patterns=_SD15_BASE_FILES,
            description="Stable Diffusion 1.5 (diffusers layout, fp32 safetensors)",
        ),
        "transparent_attn": WeightSource(
            _LAYERDIFFUSE_V1,
            "layer_sd15_transparent_attn.safetensors",
            description="LayerDiffuse SD1.5 foreground attention-sharing weights",
        ),
        "transparent_encoder": WeightSource(
            _LAYERDIFFUSE_V1,
            "layer_sd15_vae_transparent_encoder.safetensors",
            description="LayerDiffuse SD1.5 transparency (latent offset) encoder",
        ),
        "transparent_decoder": WeightSource(
            _LAYERDIFFUSE_V1,
            "layer_sd15_vae_transparent_decoder.safetensors",
            description="LayerDiffuse SD1.5 transparency decoder",
        ),
        "motion_adapter": WeightSource(
            "guoyww/animatediff-motion-adapter-v1-5-2",
            allow_patterns=_MOTION_ADAPTER_FILES,
            description="AnimateDiff v2 motion adapter for SD1.5",
        ),
    },
    "sdxl": {
        "base": WeightSource(
            "stabilityai/stable-diffusion-xl-base-1.0",
            allow_patterns=_SDXL_BASE_FILES,
            description="Stable Diffusion XL 1.0 base (diffusers layout, fp32 safetensors)",
        ),
        "transparent_attn": WeightSource(
            _LAYERDIFFUSE_V1,
            "layer_xl_transparent_attn.safetensors",
            description="LayerDiffuse SDXL foreground attention LoRA",
        ),
        "transparent_encoder": WeightSource(
            _LAYERDIFFUSE_V1,
            "vae_transparent_encoder.safetensors",
            description="LayerDiffuse SDXL transparency (latent offset) encoder",
        ),
        "transparent_decoder": WeightSource(
            _LAYERDIFFUSE_V1,
            "vae_transparent_decoder.safetensors",
            description="LayerDiffuse SDXL transparency decoder",
        ),
        "motion_adapter": WeightSource(
            "guoyww/animatediff-motion-adapter-sdxl-beta",
            allow_patterns=_MOTION_ADAPTER_FILES,
            description="AnimateDiff SDXL motion adapter (beta)",
        ),
    },
}


# Weights the evaluation uses (`layeranim eval`), outside the render families: CLIP for the CLIP score.
CLIP_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
EVAL_SOURCES: dict[str, WeightSource] = {
    "clip": WeightSource(
        "openai/clip-vit-large-patch14",
        allow_patterns=CLIP_FILES,
        description="OpenAI CLIP ViT-L/14, for the CLIP score of `layeranim eval`",
    ),
}


# Distilled (few-step) motion weights for SD1.5, used by `layeranim.speed`'s presets. AnimateLCM ships a
# diffusers MotionAdapter folder at its repository root plus an LCM LoRA for the UNet's spatial layers;
# AnimateDiff-Lightning ships one diffusers-keyed MotionAdapter state dict per step count (its `_comfyui`
# files are the same weights in AnimateDiff's original layout).
_ANIMATELCM = "wangfuyun/AnimateLCM"
_LIGHTNING = "ByteDance/AnimateDiff-Lightning"
SPEED_SOURCES: dict[str, WeightSource] = {
    "animatelcm_motion_adapter": WeightSource(
        _ANIMATELCM,
        allow_patterns=_MOTION_ADAPTER_FILES,
        description="AnimateLCM motion adapter (diffusers MotionAdapter, SD1.5, 4–8 steps with LCMScheduler)",
    ),
    "animatelcm_lora": WeightSource(
        _ANIMATELCM,
        "AnimateLCM_sd15_t2v_lora.safetensors",
        description="AnimateLCM LCM LoRA for the SD1.5 UNet's spatial layers",
    ),
    **{
        f"lightning_{steps}step": WeightSource(
            _LIGHTNING,
            f"animatediff_lightning_{steps}step_diffusers.safetensors",
            description=f"AnimateDiff-Lightning {steps}-step motion adapter (diffusers keys, SD1.5)",
        )
        for steps in (2, 4, 8)
    },
}


def default_source(family: str, component: str) -> WeightSource:
    """The default weights for a family's component, from `DEFAULT_SOURCES`."""
    if family not in DEFAULT_SOURCES:
        raise UsageError(f"family={family!r} is not a model family; use one of {', '.join(FAMILIES)}.")
    if component not in DEFAULT_SOURCES[family]:
        raise UsageError(
            f"component {component!r} is not one of {', '.join(DEFAULT_SOURCES[family])} (family {family})."
        )
    return DEFAULT_SOURCES[family][component]


def download_command(source: WeightSource) -> str:
    """The command that fetches `source`: `layeranim models download …` for default weights, else `hf`."""
    for family, table in DEFAULT_SOURCES.items():
        for component, default in table.items():
            if default == source:
                return f"layeranim models download {family} --component {component}"
    return source.hf_command()


# ---------------------------------------------------------------------------------------------------
# References.

_HUB_REF = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[^/@\s]+))?(?:/(?P<path>\S+))?$")


def parse_ref(
    ref: str | Path | WeightSource, *, allow_patterns: tuple[str, ...] | None = None
) -> Path | WeightSource:
    """A weights reference → an existing local path, or the hub source it names (nothing is fetched).

    `allow_patterns` chooses the files of a bare repository reference (`owner/name`).
    """
    if isinstance(ref, WeightSource):
        return ref
    text = str(ref).strip()
    local = Path(text).expanduser()
    if isinstance(ref, Path) or local.exists():
        if not local.exists():
            raise UsageError(f"{text!r} does not exist; give an existing file or folder.")
        return local
    match = _HUB_REF.match(text)
    looks_local = text.startswith(("/", ".", "~")) or "\\" in text or (len(text) > 1 and text[1] == ":")
    if match is None or looks_local:
        raise UsageError(
            f"{text!r} is neither an existing file or folder nor a hub reference; give a local path, "
            "a repository id (owner/name) or a file in a repository (owner/name/file.safetensors)."
        )
    repo_id, revision, path = match["repo"], match["revision"] or "main", match["path"]
    try:
        huggingface_hub.utils.validate_repo_id(repo_id)
    except hub_errors.HFValidationError as exc:
        raise UsageError(f"{text!r} is not a valid hub repository id ({exc}).") from exc
    if path is None:
        return WeightSource(repo_id, revision=revision, allow_patterns=allow_patterns)
    path = path.strip("/")
    if Path(path).suffix:  # a file in the repository
        return WeightSource(repo_id, path, revision=revision)
    return WeightSource(repo_id, revision=revision, subfolder=path, allow_patterns=(f"{path}/*",))


def resolve(
    component_ref: str | Path | WeightSource,
    *,
    allow_patterns: tuple[str, ...] | None = None,
    local_files_only: bool = False,
    cache_dir: Path | None = None,
) -> Path:
    """A weights reference → a local file or folder, downloading into the hub cache if needed."""
    parsed = parse_ref(component_ref, allow_patterns=allow_patterns)
    if isinstance(parsed, Path):
        return parsed
    return resolve_source(parsed, local_files_only=local_files_only, cache_dir=cache_dir)


def resolve_source(
    source: WeightSource, *, local_files_only: bool = False, cache_dir: Path | None = None
) -> Path:
    """Fetch (or find in the cache) a hub source; missing and unreachable → `WeightsError`."""
    offline = local_files_only or hub_offline()
    try:
        if source.filename is not None:
            path = huggingface_hub.hf_hub_download(
                source.repo_id,
                source.filename,
                subfolder=source.subfolder,
                revision=source.revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                library_name="layeranim",
                library_version=__version__,
            )
            return Path(path)
        folder = huggingface_hub.snapshot_download(
            source.repo_id,
            revision=source.revision,
            cache_dir=cache_dir,
            allow_patterns=list(source.allow_patterns) if source.allow_patterns else None,
            local_files_only=local_files_only,
            library_name="layeranim",
            library_version=__version__,
        )
    except hub_errors.LocalEntryNotFoundError as exc:  # before EntryNotFoundError: it subclasses it
        if hub_offline():
            reason = "not in the local cache and downloads are off (HF_HUB_OFFLINE=1)"
        elif offline:
            reason = "not in the local cache"
        else:
            reason = f"not in the local cache and the hub could not be reached ({_first_line(exc)})"
        raise WeightsError(
            _missing_message(source, missing_files(source, cache_dir=cache_dir), reason)
        ) from exc
    except hub_errors.GatedRepoError as exc:
        raise WeightsError(
            f"{source.repo_id} is a gated repository: accept its terms at https://huggingface.co/"
            f"{source.repo_id}, then set HF_TOKEN or run `hf auth login`, and retry."
        ) from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise WeightsError(
            f"repository {source.repo_id!r} was not found on the hub (if it is private, set HF_TOKEN or run "
            "`hf auth login`); check the id."
        ) from exc
    except hub_errors.RevisionNotFoundError as exc:
        raise WeightsError(
            f"revision {source.revision!r} of {source.repo_id} does not exist; check it."
        ) from exc
    except hub_errors.EntryNotFoundError as exc:
        raise WeightsError(
            f"{source.path_in_repo!r} is not a file of {source.repo_id}@{source.revision}; check the name at "
            f"https://huggingface.co/{source.repo_id}/tree/{source.revision}."
        ) from exc
    except (hub_errors.HfHubHTTPError, OSError) as exc:
        raise WeightsError(
            _missing_message(source, source.files(), f"could not be downloaded ({_first_line(exc)})")
        ) from exc
    # A folder snapshot is returned even when some wanted files never arrived (offline, partial cache).
    missing = _missing_in_folder(Path(folder), source)
    if missing:
        raise WeightsError(_missing_message(source, missing, "incomplete in the local cache"))
    return Path(folder) / source.subfolder if source.subfolder else Path(folder)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _missing_message(source: WeightSource, missing: list[str], reason: str) -> str:
    files = ", ".join(missing or source.files())
    revision = "" if source.revision == "main" else f" (revision {source.revision})"
    hf = source.hf_command(missing or None)
    command = download_command(source)
    if command.startswith("hf "):
        command = hf
    also = f" (or: {hf})" if command != hf else ""
    return (
        f"weights {reason}: {files} from https://huggingface.co/{source.repo_id}{revision}; "
        f"fetch them with `{command}`{also} on a machine with network access (then re-run with the same "
        "HF_HOME/HF_HUB_CACHE)."
    )


# ---------------------------------------------------------------------------------------------------
# The cache, without the network.


def _snapshot_dir(source: WeightSource, cache_dir: Path | None = None) -> Path | None:
    """The cached snapshot folder for the source's revision, or None."""
    repo_dir = Path(cache_dir or hub_cache_dir()) / repo_folder_name(
        repo_id=source.repo_id, repo_type="model"
    )
    commit = source.revision
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        ref_file = repo_dir / "refs" / source.revision
        if not ref_file.is_file():
            return None
        commit = ref_file.read_text().strip()
    snapshot = repo_dir / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _missing_in_folder(folder: Path, source: WeightSource) -> list[str]:
    """The files or patterns of a folder source that have no match under `folder`."""
    if not folder.is_dir():
        return source.files()
    present = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return [pattern for pattern in source.files() if not fnmatch.filter(present, pattern)]


def missing_files(source: WeightSource, *, cache_dir: Path | None = None) -> list[str]:
    """Which of the source's files are not in the local hub cache (no network)."""
    if source.path_in_repo is not None:
        found = huggingface_hub.try_to_load_from_cache(
            source.repo_id, source.path_in_repo, cache_dir=cache_dir, revision=source.revision
        )
        return [] if isinstance(found, str) else [source.path_in_repo]
    snapshot = _snapshot_dir(source, cache_dir)
    if snapshot is None:
        return source.files()
    return _missing_in_folder(snapshot, source)


def is_cached(source: WeightSource, *, cache_dir: Path | None = None) -> bool:
    """Whether every file of `source` is in the local hub cache (no network)."""
    return not missing_files(source, cache_dir=cache_dir)


def cached_path(source: WeightSource, *, cache_dir: Path | None = None) -> Path | None:
    """The local path of a fully cached source, or None (no network)."""
    if not is_cached(source, cache_dir=cache_dir):
        return None
    return resolve_source(source, local_files_only=True, cache_dir=cache_dir)


# ---------------------------------------------------------------------------------------------------
# Provenance for manifests.


def describe_path(path: Path) -> str:
    """A resolved path as provenance: `owner/name@commit[/file]` inside the hub cache, else the path."""
    parts = Path(path).absolute().parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            repo_id = parts[i].removeprefix("models--").replace("--", "/")
            inner = "/".join(parts[i + 3 :])
            return f"{repo_id}@{parts[i + 2]}" + (f"/{inner}" if inner else "")
    return str(Path(path).absolute())


def file_sha256(path: Path) -> str:
    """The sha256 of a file (read from the hub cache's blob name when it already is one)."""
    path = Path(path)
    blob = path.resolve()
    if path.is_symlink() and blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return blob.name  # LFS blobs are stored under their content's sha256
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
