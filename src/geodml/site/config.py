"""A site's configuration file (TOML), validated with errors that name the field.

Example::

    name = "eu-west"                 # the DC's name, as links and reports show it
    region = "europe-west1"
    listen = "127.0.0.1:7001"        # port 0: any free port (see --port-file)
    insecure = false                 # plaintext: only with --insecure, only on loopback

    [data]
    path = "data/eu-west"            # relative paths are relative to this file
    format = "geodml"                # or libsvm | criteo | csv | parquet (+ options)
    options = {}                     # reader options, e.g. { n_features = 123 }
    mmap = false                     # geodml: memory-map the arrays instead of reading
    stream = false                   # geodml: read the rows block by block from the
                                     # mapped files, each block's pages released after
                                     # use: resident memory O(rows) + O(block), not O(nnz)
    block_nnz = 4194304              # with stream: nonzeros per block

    [executor]
    shards = 2                       # row shards, reduced inside the DC
    threads = 2

    [policy]
    allow_raw_export = false
    min_rows_per_aggregate = 100
    allowed_clients = ["coordinator"]
    share_support = true

    [privacy]                        # with policy dp_epsilon / dp_delta
    ledger = "state/privacy.json"    # the budget spent, kept across restarts

    [tls]
    ca = "certs/ca.pem"
    cert = "certs/eu-west.pem"
    key = "certs/eu-west.key"
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from geodml.errors import ConfigError
from geodml.site.policy import Policy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _no_nul(path: Path) -> Path:
    if "\x00" in str(path):
        raise ValueError("a path may not contain a NUL character")
    return path


FilePath = Annotated[Path, AfterValidator(_no_nul)]  # a path from a config file


class DataConfig(_Strict):
    """Where the site's rows are. ``mmap``: a geodml directory's arrays memory-mapped
    (pages read stay resident). ``stream``: memory-mapped and read block by block of
    about ``block_nnz`` nonzeros, each block's pages released after use, so that the
    site holds O(rows) vectors + O(block), not O(nnz) (:mod:`geodml.data.streamed`);
    implies ``mmap``. ``block_nnz`` without ``stream`` cuts the in-memory rows into
    the same blocks (the same sums, bit for bit)."""

    path: FilePath
    format: str = "geodml"
    mmap: bool = False
    stream: bool = False
    block_nnz: int | None = Field(default=None, ge=1024, le=1 << 30)
    options: dict[str, Any] = Field(default_factory=dict)


class ExecutorConfig(_Strict):
    """``threads``: shards on a thread pool in the site process; ``ray``: each shard a
    Ray actor reading its rows from storage (geodml.site.ray_executor)."""

    kind: str = Field(default="threads", pattern="^(threads|ray)$")
    ray_address: str = "auto"  # "auto" starts a local Ray; else a cluster's address
    shards: int = Field(default=1, ge=1, le=4096)
    threads: int | None = Field(default=None, ge=1, le=1024)


def resolve_path(path: Path, base: Path) -> Path:
    """``path`` made absolute relative to ``base`` (a config file's folder)."""
    return path if path.is_absolute() else (base / path).resolve()


class TlsConfig(_Strict):
    ca: FilePath
    cert: FilePath
    key: FilePath

    def resolve(self, base: Path) -> TlsConfig:
        return TlsConfig(ca=resolve_path(self.ca, base), cert=resolve_path(self.cert, base),
                         key=resolve_path(self.key, base))


class AuditConfig(_Strict):
    """The site's own signed audit log (docs/security.md); needs ``[tls]`` (its key signs)."""

    path: FilePath


class PrivacyConfig(_Strict):
    """Where the site keeps its privacy ledger (the budget its releases spent)."""

    ledger: FilePath


class SiteConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    region: str = ""
    listen: str = "127.0.0.1:0"
    insecure: bool = False
    data: DataConfig
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    policy: Policy = Field(default_factory=Policy)
    tls: TlsConfig | None = None
    audit: AuditConfig | None = None
    privacy: PrivacyConfig | None = None

    def resolve(self, base: Path) -> SiteConfig:
        """Paths made absolute relative to ``base`` (the config file's folder)."""
        out = self.model_copy(deep=True)
        out.data.path = resolve_path(out.data.path, base)
        if out.audit is not None:
            out.audit.path = resolve_path(out.audit.path, base)
        if out.privacy is not None:
            out.privacy.ledger = resolve_path(out.privacy.ledger, base)
        if out.tls is not None:
            out.tls = out.tls.resolve(base)
        return out


def field_location(loc: tuple) -> str:
    """A validation error's location as ``a.b.0.c`` (an empty key shown as ``""``)."""
    return ".".join(str(x) if str(x) else '""' for x in loc) or "(top level)"


def format_validation_error(source: str, e: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in e.errors():
        lines.append(f"  {field_location(err['loc'])}: {err['msg']}")
    return "\n".join(lines)


def load_toml(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as f:  # as TOML says: no newline translation (a bare CR is
            return tomllib.load(f)    # an error, not a line break)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load_site_config(path: str | os.PathLike) -> SiteConfig:
    path = Path(path)
    try:
        config = SiteConfig.model_validate(load_toml(path))
    except ValidationError as e:
        raise ConfigError(format_validation_error(str(path), e)) from None
    if config.tls is None and not config.insecure:
        raise ConfigError(f"{path}: tls: missing; mutual TLS is required unless insecure = true")
    if config.data.stream and config.data.format != "geodml":
        raise ConfigError(f"{path}: data.stream: streaming reads a geodml dataset directory "
                          f"block by block; convert the {config.data.format} data first "
                          "(geodml convert)")
    if config.data.stream and config.executor.kind == "ray":
        raise ConfigError(f"{path}: data.stream: streaming runs on the thread executor "
                          "(executor.kind = \"threads\"); Ray actors load their own rows")
    if config.executor.kind == "ray" and config.data.format != "geodml":
        raise ConfigError(f"{path}: executor.kind: ray reads each shard from a geodml "
                          f"dataset directory; convert the {config.data.format} data first "
                          "(geodml convert)")
    if config.audit is not None and config.tls is None:
        raise ConfigError(f"{path}: audit: a signed audit log needs [tls] (the site's key "
                          "signs it)")
    if config.policy.dp_epsilon is not None and config.privacy is None:
        raise ConfigError(f"{path}: privacy: a privacy budget (policy.dp_epsilon) needs "
                          "[privacy] ledger = PATH, so that a restart does not forget what "
                          "was spent")
    return config.resolve(path.parent)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_site_config(config: SiteConfig) -> str:
    """The config as TOML text that :func:`load_site_config` reads back."""
    data = config.model_dump(exclude_none=True)
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict) and key != "options":
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"
