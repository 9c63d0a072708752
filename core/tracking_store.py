"""The tracking store's address, checked before anything is created: the form of
`$MLFLOW_TRACKING_URI`, and that a tracking server answers within `$LARR_TRACKING_TIMEOUT_S` seconds
(MLflow's own retries would take minutes to give up)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.catalog import is_remote


class TrackingError(RuntimeError):
    pass


URI_VARIABLE = "MLFLOW_TRACKING_URI"
TIMEOUT_VARIABLE = "LARR_TRACKING_TIMEOUT_S"  # how long the start-up check waits for a server
DEFAULT_TIMEOUT_S = 5.0
ACCEPTED_URIS = (
    "http(s)://<host>[:<port>] (a tracking server), databricks or databricks://<profile>, "
    "sqlite:///<path> (or postgresql|mysql|mssql[+driver]://...), file:///<path> or an absolute "
    "path (a file store: MLflow 3 wants MLFLOW_ALLOW_FILE_STORE=true)"
)
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def tracking_uri(lakehouse_root: str) -> str:
    env = os.environ.get(URI_VARIABLE)
    if env:
        return env
    if is_remote(lakehouse_root):
        raise TrackingError(
            f"lakehouse {lakehouse_root} is remote: set MLFLOW_TRACKING_URI (for example `databricks`)"
        )
    return f"sqlite:///{Path(lakehouse_root).resolve()}/mlflow.db"


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store live beside it; a tracking server decides its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def check_timeout_s() -> float:
    """`$LARR_TRACKING_TIMEOUT_S`: seconds the start-up check waits for a tracking server."""
    raw = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise TrackingError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, got {raw!r}")
    return value


def _scheme(uri: str) -> str:
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.lower()
    return "" if len(scheme) == 1 else scheme  # C:\... is a path


def _plugin_schemes() -> set[str]:
    """Schemes that MLflow plugins registered (entry points); empty where MLflow hides them."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return set(_tracking_store_registry._registry) - {"", "uc", "databricks-uc"}
    except Exception:  # noqa: BLE001 - a private registry: no plugins then
        return set()


def check_uri_form(uri: str) -> None:
    """Refuse, in one line, a `$MLFLOW_TRACKING_URI` that MLflow would misread (a value with no
    scheme that is no path is taken for a file store and fails with an unrelated message)."""
    from urllib.parse import urlparse

    spaced = any(c.isspace() for c in uri)
    try:
        parsed = urlparse(uri)
        scheme = _scheme(uri)
        if uri != uri.strip() or not uri:
            ok = False
        elif uri == "databricks" or scheme == "databricks":
            ok = uri == "databricks" or (uri.startswith("databricks://") and len(uri) > 13 and not spaced)
        elif scheme in ("http", "https"):
            ok = bool(parsed.hostname) and not spaced
        elif scheme.split("+")[0] in _DATABASE_SCHEMES:  # sqlite paths may hold spaces
            ok = uri.startswith(f"{parsed.scheme}://") and (scheme.startswith("sqlite") or not spaced)
        elif scheme == "file":
            ok = parsed.path.startswith("/")
        elif scheme == "":
            ok = uri.startswith(("/", "./", "../", "~")) or Path(uri).exists()
        else:
            ok = scheme in _plugin_schemes()
    except ValueError:  # urlparse: an invalid IPv6 host, a bad port
        ok = False
    if not ok:
        raise TrackingError(
            f"{URI_VARIABLE}={uri!r} is not a tracking URI MLflow accepts: use {ACCEPTED_URIS}; "
            f"or unset it for the lakehouse's own sqlite store"
        )


def _probe_server(uri: str, timeout: float) -> None:
    """A tracking server must answer HTTP within `timeout` seconds (any status: a 401 or a 404
    behind a proxy is an answer, and MLflow's own check then says more)."""
    import ssl
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except ValueError:  # a URL urllib cannot send (credentials in it): MLflow's check decides
        return
    except (urllib.error.URLError, OSError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        if isinstance(reason, ssl.SSLError):  # TLS answered; MLflow checks certificates its own way
            return
        text = (getattr(reason, "strerror", None) or str(reason) or type(reason).__name__).strip()
        raise TrackingError(
            f"{URI_VARIABLE} {uri} is unreachable within {timeout:g} s: {text}; "
            f"start the server or unset {URI_VARIABLE}"
        ) from None


def check_store(lakehouse_root: str) -> str:
    """The store's URI, checked without creating anything: the form of `$MLFLOW_TRACKING_URI`,
    and that a tracking server answers within `$LARR_TRACKING_TIMEOUT_S` seconds."""
    uri = tracking_uri(lakehouse_root)
    timeout = check_timeout_s()
    if os.environ.get(URI_VARIABLE):
        check_uri_form(uri)
    if is_server(uri):
        _probe_server(uri, timeout)
        check_answers(uri, timeout)  # a server that answers HTTP but not MLflow's API (a proxy's 404)
    return uri


def is_server(uri: str) -> bool:
    return _scheme(uri) in ("http", "https")


def check_answers(uri: str, timeout: float) -> None:
    """MLflow's own API call against the store, without retries, within `timeout` seconds."""
    import mlflow

    try:
        with quick_http(timeout):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure here means "unreachable"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"MLflow tracking URI {uri} is unreachable: {first_line}") from None


@contextmanager
def quick_http(timeout: float) -> Iterator[None]:
    """MLflow's HTTP calls without retries and with `timeout`, for the start-up check only (its
    defaults retry an unreachable server for about 4 minutes)."""
    settings = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(math.ceil(timeout)),
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
