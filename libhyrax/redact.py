"""Secrets never reach a results directory, a log or the terminal.

A tracking server's URL may carry credentials (`https://user:token@host/`), and a config may hold keys
named like secrets (`password`, `token`, `api_key`, ...). Everything Hyrax writes or prints that could
hold them goes through here first: the config snapshot (`runtime_config.toml`), provenance (its command
line), log records (stderr and `<stage>.log`) and the error messages the CLI prints. Credentials for the
tracking server belong in MLflow's own environment variables (MLFLOW_TRACKING_USERNAME,
MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN), which Hyrax never records.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
# scheme://user:password@host  ->  scheme://user:***@host ; scheme://token@host -> scheme://***@host
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s/@:'\"]*)(?::(?P<pw>[^\s/@'\"]*))?@")
_SECRET_PARAM = re.compile(
    r"(?i)(?P<key>[?&;](?:access_token|token|password|passwd|pwd|secret|api_key|apikey|key|"
    r"sig|signature|auth)=)(?P<value>[^&\s'\"#]+)"
)
SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api_?key|credential|private_key)")


def _userinfo(m: re.Match) -> str:
    if m["pw"] is not None:
        return f"{m['scheme']}{m['user']}:{MASK}@"
    return f"{m['scheme']}{MASK}@" if m["user"] else m.group(0)


def text(s: str) -> str:
    """`s` with credentials in URLs (user:password@, ?token=...) masked."""
    if "@" not in s and "=" not in s:
        return s
    return _SECRET_PARAM.sub(lambda m: m["key"] + MASK, _URL_USERINFO.sub(_userinfo, s))


def value(key: str, v: Any) -> Any:
    if isinstance(v, dict):
        return config(v)
    if isinstance(v, str):
        return MASK if v and SECRET_KEY.search(key) else text(v)
    if isinstance(v, list):
        return [value(key, x) for x in v]
    return v


def config(cfg: dict) -> dict:
    """A copy of a config with secret-named keys and URL credentials masked."""
    return {k: value(k, v) for k, v in cfg.items()}


def url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without user:password@, the user, the password)."""
    m = _URL_USERINFO.search(url)
    if not m or not m["user"] and m["pw"] is None:
        return url, None, None
    return url[: m.start()] + m["scheme"] + url[m.end() :], m["user"] or None, m["pw"]


class Filter(logging.Filter):
    """Masks secrets in every record a handler writes (stderr, a stage's log file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
