"""``mammobench ui``: the MLflow UI on the local store, bound to loopback unless told otherwise."""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

from orchestration.settings import Settings

LOOPBACK = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it reaches other machines
        return False


def host_header(name: str, port: int) -> str:
    """The Host header a browser sends for ``name:port`` (IPv6 addresses in brackets)."""
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


MODEL_TRAINING = "workflowType=machine_learning"


def ui_url(host: str, port: int, experiment: str | None = None) -> str:
    """The URL to open on this machine (a wildcard bind answers on loopback too): the
    ``experiment``'s runs, or the experiments list, in the UI's model-training view.

    MLflow 3.17's UI picks GenAI or model training from one switch kept in the browser (GenAI
    on a fresh one), not from the experiment's ``mlflow.experimentKind`` tag; the URL's
    ``workflowType`` sets it.
    """
    base = f"http://{host_header(LOOPBACK if host in WILDCARDS else host, port)}"
    page = f"experiments/{experiment}/runs" if experiment else "experiments"
    return f"{base}/#/{page}?{MODEL_TRAINING}"


def newest_experiment(tracking_uri: str) -> tuple[str, str] | None:
    """(id, name) of the experiment mammobench touched last in a local store, if any."""
    if not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return None
    from orchestration.results.tracking import EXPERIMENT_KIND, client_for

    ((key, value),) = EXPERIMENT_KIND.items()
    found = client_for(tracking_uri).search_experiments(
        filter_string=f"tags.`{key}` = '{value}'",
        order_by=["last_update_time DESC"],
        max_results=1,
    )
    return (found[0].experiment_id, found[0].name) if found else None


def exposed_names(host: str) -> list[str]:
    """Names other machines reach a server bound to ``host`` by.

    A wildcard bind answers on every interface, so browsers elsewhere use this machine's
    host name or one of its addresses; a specific address is reached by that address.
    """
    if host not in WILDCARDS:
        return [host]
    name = socket.gethostname()
    try:
        addresses = socket.gethostbyname_ex(name)[2]
    except OSError:  # the host name does not resolve: names only
        addresses = []
    addresses += [address] if (address := outgoing_address()) else []
    others = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
    return list(dict.fromkeys([name, socket.getfqdn(), *others]))


def outgoing_address() -> str | None:
    """This machine's address on its default route, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # UDP: picks the interface, sends nothing
        except OSError:
            return None
        return sock.getsockname()[0]


def allowed_hosts(host: str, port: int) -> list[str]:
    """Host headers the server answers: loopback, plus the names ``host`` exposes (never ``*``).

    Any other Host header gets 403, which keeps DNS-rebinding pages out.
    """
    names = ["127.0.0.1", "localhost"]
    if not is_loopback(host):
        names += exposed_names(host)
    return list(dict.fromkeys(host_header(name, port) for name in names))


def exposure_warning(host: str, port: int) -> str | None:
    """The warning for a bind that other machines can reach (None on loopback)."""
    if is_loopback(host):
        return None
    reach = "this machine" if host in WILDCARDS else host
    return (
        f"warning: the MLflow UI listens on {host_header(host, port)}, beyond this machine. "
        f"The local store is unauthenticated: anyone who can reach {reach} can read, change "
        "and delete every run and model. Prefer the default 127.0.0.1 with "
        f"`ssh -L {port}:127.0.0.1:{port} <this-host>` from your own machine, or the "
        "cluster's MLflow server with basic auth. "
        f"Host headers answered: {', '.join(allowed_hosts(host, port))}."
    )


def ui_command(settings: Settings, port: int, host: str = LOOPBACK) -> list[str]:
    """The ``mlflow server`` command for the local store, listening on ``host``.

    The default 127.0.0.1 keeps other machines out; use ``ssh -L`` port-forwarding to reach
    it from elsewhere.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).parent / "mlflow"
    return [
        str(mlflow),
        "server",
        "--backend-store-uri",
        settings.tracking_uri,
        "--default-artifact-root",
        settings.artifact_root.as_uri(),
        "--host",
        host,
        "--port",
        str(port),
        "--allowed-hosts",
        ",".join(allowed_hosts(host, port)),
        "--workers",
        "1",
    ]
