"""Where the coordinator is: flags, then CORRAL_URL/CORRAL_TOKEN, then the `corral up` config."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from ._errors import ConfigError


@dataclass(frozen=True)
class Target:
    """A coordinator URL and the token to present to it."""

    url: str
    token: str | None
    ca: str | None = None  # a CA file to trust instead of the system store (CORRAL_CA)

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What httpx should verify the server's certificate with."""
        if not self.ca:
            return True
        try:
            return ssl.create_default_context(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use CA file {self.ca}: {exc}") from exc


def config_path() -> Path:
    """The client config file `corral up` writes."""
    explicit = os.environ.get("CORRAL_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "corral" / "config.json"


def write_config(url: str, token: str | None, ca: str | None = None) -> Path:
    """Save a client config readable by its owner only."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    data = {"url": url, "token": token, **({"ca": ca} if ca else {})}
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_config() -> dict[str, str]:
    """The saved config, or {} when there is none."""
    path = config_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; delete it or run `corral up`") from exc
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def resolve(url: str | None = None, token: str | None = None) -> Target:
    """Find the coordinator the way every client does."""
    saved: dict[str, str] | None = None
    if not url:
        url = os.environ.get("CORRAL_URL")
    if not url:
        saved = read_config()
        url = saved.get("url")
    if not url:
        raise ConfigError(
            "no coordinator configured: run `corral up`, or pass --server URL / set CORRAL_URL"
        )
    if token is None:
        token = os.environ.get("CORRAL_TOKEN")
    if token is None:
        saved = read_config() if saved is None else saved
        token = saved.get("token") if saved.get("url", url).rstrip("/") == url.rstrip("/") else None
    ca = os.environ.get("CORRAL_CA")
    if not ca:
        saved = read_config() if saved is None else saved
        ca = saved.get("ca") if saved.get("url", "").rstrip("/") == url.rstrip("/") else None
    return Target(url.rstrip("/"), token, ca or None)
