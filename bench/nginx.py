"""nginx as the reference reverse proxy: its config, written into a temp dir.

One worker (like the gateway's one process), HTTP/1.1 to the upstream with 64
idle keep-alive connections, no buffering (streams pass event by event, as
through the gateway), no access log.  Keep-alive request limits are lifted on
both sides, so neither wrk's connections nor the upstream pool are recycled
every 1,000 requests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")

CONFIG = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections {connections};
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream bench {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary, or ``None`` when it is not installed."""
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def write_config(prefix: Path, port: int, upstream_port: int, nofile: int) -> Path:
    """Write ``nginx.conf`` under ``prefix`` (nginx's ``-p``) and return its path."""
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(
        CONFIG.format(
            prefix=prefix,
            port=port,
            upstream_port=upstream_port,
            nofile=nofile,
            # Each stream holds a client and an upstream connection, and nginx counts
            # more slots than open sockets (it ran out at 9,344 streams with 19,936):
            # above the open-file limit, that limit is the only ceiling.
            connections=2 * nofile,
        )
    )
    return path


def nginx_argv(binary: str, prefix: Path, config: Path) -> list[str]:
    """Run nginx in the foreground, as the runner's child, with that config."""
    return [binary, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"]
